//! How the simulated core misbehaves: set by flags at start-up, changed
//! while running through `POST /_sim/mode`.

use serde_json::{Value, json};

/// The current misbehaviour; every request reads it once, on arrival.
#[derive(Debug, Clone, Copy, Default, PartialEq, clap::Args)]
pub struct Mode {
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Answer 503 to every Nth request (0: never; 1: an outage).
    #[arg(long, default_value_t = 0)]
    pub fail_every: u64,
    /// Answer 503 to this fraction of requests, at random (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Accept connections but never answer (a hung core).
    #[arg(long)]
    pub hang: bool,
    /// Send status and headers at once, then the body one byte every N
    /// milliseconds (0: the whole body at once).
    #[arg(long, default_value_t = 0)]
    pub trickle_ms: u64,
    /// Ignore `Idempotency-Key`: every `POST /transfers` executes a new
    /// transfer, as a core that does not deduplicate.
    #[arg(long)]
    pub ignore_idempotency: bool,
}

impl Mode {
    /// The mode as `GET /_sim/mode` reports it.
    pub fn to_json(self) -> Value {
        json!({
            "latency_ms": self.latency_ms,
            "fail_every": self.fail_every,
            "error_rate": self.error_rate,
            "hang": self.hang,
            "trickle_ms": self.trickle_ms,
            "ignore_idempotency": self.ignore_idempotency,
        })
    }

    /// Sets the fields present in `patch` (a JSON object) and keeps the
    /// others. Nothing changes if any field is unknown or invalid.
    pub fn apply(&mut self, patch: &Value) -> Result<(), String> {
        let Some(fields) = patch.as_object() else {
            return Err("the mode must be a JSON object".into());
        };
        let mut next = *self;
        for (name, value) in fields {
            match name.as_str() {
                "latency_ms" => next.latency_ms = whole(name, value)?,
                "fail_every" => next.fail_every = whole(name, value)?,
                "trickle_ms" => next.trickle_ms = whole(name, value)?,
                "error_rate" => {
                    next.error_rate = value
                        .as_f64()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or("`error_rate` must be a number from 0.0 to 1.0")?;
                }
                "hang" => next.hang = flag(name, value)?,
                "ignore_idempotency" => next.ignore_idempotency = flag(name, value)?,
                other => return Err(format!("unknown mode field `{other}`")),
            }
        }
        *self = next;
        Ok(())
    }
}

fn whole(name: &str, value: &Value) -> Result<u64, String> {
    value
        .as_u64()
        .ok_or_else(|| format!("`{name}` must be a whole number of at least 0"))
}

fn flag(name: &str, value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("`{name}` must be true or false"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("`{text}` is not a number from 0.0 to 1.0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        mode: Mode,
    }

    #[test]
    fn flags_set_the_initial_mode() {
        let flags = Flags::try_parse_from([
            "core-sim",
            "--latency-ms",
            "250",
            "--fail-every",
            "1",
            "--error-rate",
            "0.5",
            "--hang",
            "--trickle-ms",
            "1000",
            "--ignore-idempotency",
        ])
        .unwrap();
        let expected = Mode {
            latency_ms: 250,
            fail_every: 1,
            error_rate: 0.5,
            hang: true,
            trickle_ms: 1000,
            ignore_idempotency: true,
        };
        assert_eq!(flags.mode, expected);
        assert_eq!(
            Flags::try_parse_from(["core-sim"]).unwrap().mode,
            Mode::default()
        );
        assert!(Flags::try_parse_from(["core-sim", "--error-rate", "1.5"]).is_err());
    }

    #[test]
    fn absent_fields_keep_their_value() {
        let mut mode = Mode {
            latency_ms: 100,
            hang: true,
            ..Mode::default()
        };
        mode.apply(&json!({"trickle_ms": 1000, "hang": false}))
            .unwrap();
        let expected = Mode {
            latency_ms: 100,
            trickle_ms: 1000,
            ..Mode::default()
        };
        assert_eq!(mode, expected);
        mode.apply(&json!({})).unwrap();
        assert_eq!(mode, expected);
    }

    #[test]
    fn every_field_can_be_set() {
        let mut mode = Mode::default();
        let all = json!({
            "latency_ms": 5, "fail_every": 2, "error_rate": 1, "hang": true,
            "trickle_ms": 7, "ignore_idempotency": true,
        });
        mode.apply(&all).unwrap();
        assert_eq!(
            mode.to_json(),
            json!({
                "latency_ms": 5, "fail_every": 2, "error_rate": 1.0, "hang": true,
                "trickle_ms": 7, "ignore_idempotency": true,
            })
        );
    }

    #[test]
    fn an_invalid_patch_changes_nothing() {
        let before = Mode {
            latency_ms: 100,
            ..Mode::default()
        };
        for (patch, error) in [
            (json!([1]), "JSON object"),
            (
                json!({"latency_ms": 0, "speed": 1}),
                "unknown mode field `speed`",
            ),
            (json!({"latency_ms": -1}), "`latency_ms`"),
            (json!({"fail_every": 1.5}), "`fail_every`"),
            (json!({"trickle_ms": "10"}), "`trickle_ms`"),
            (json!({"error_rate": 2.0}), "`error_rate`"),
            (json!({"hang": 1}), "`hang`"),
            (json!({"ignore_idempotency": null}), "`ignore_idempotency`"),
        ] {
            let mut mode = before;
            let message = mode.apply(&patch).unwrap_err();
            assert!(message.contains(error), "{patch}: {message}");
            assert_eq!(mode, before, "{patch}");
        }
    }
}
