//! The runtime configuration file (`--runtime-config-file`), in Spin's
//! syntax: `[key_value_store.LABEL]` with `type = "spin"` (embedded SQLite,
//! optional `path` relative to this file; no path means in memory) or
//! `type = "redis"` (`url`, `durability`, and `sequences` with
//! `peer_timeout` / `journal_days` for the sequence fence). Keys the host
//! would not use are refused with file:line, as Spin refuses unused keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;
use toml::Spanned;

/// A configured key-value backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvStoreConfig {
    /// Embedded SQLite at `path`, or in memory when `None`.
    Spin { path: Option<PathBuf> },
    /// A Redis server.
    Redis {
        url: String,
        durability: RedisDurability,
        /// The keys fenced against Redis losing writes (`None`: not fenced).
        fence: Option<SequenceFence>,
    },
}

/// `sequences = [...]` of a Redis store: key prefixes whose `increment`
/// never hands out a number twice after Redis goes back in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceFence {
    /// `sequences`: key prefixes, e.g. `["lane-seq:"]`.
    pub sequences: Vec<String>,
    /// `peer_timeout` (default 30s): how long a host waits for its peers to
    /// raise their sequences after a rewind.
    pub peer_timeout: Duration,
    /// `journal_days` (default 7): days the host's journal keeps a key that
    /// was not incremented since.
    pub journal_days: u32,
}

/// What a Redis store must keep of what it acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisDurability {
    /// The server must keep an append-only file (checked at start).
    #[default]
    Durable,
    /// The server may lose acknowledged writes (accepted with a warning).
    Volatile,
}

/// The parsed runtime configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `[key_value_store.LABEL]` tables.
    pub key_value_stores: BTreeMap<String, KvStoreConfig>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    key_value_store: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(flatten)]
    unused: BTreeMap<String, toml::Value>,
}

/// Reads and validates the runtime config file.
pub fn load(path: &Path) -> anyhow::Result<RuntimeConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading runtime config {}: {e}", path.display()))?;
    parse(&text, path)
}

/// Parses runtime config text; `path` names the file in errors and anchors
/// relative store paths.
pub fn parse(text: &str, path: &Path) -> anyhow::Result<RuntimeConfig> {
    let at =
        |span: std::ops::Range<usize>| format!("{}:{}", path.display(), line_of(text, span.start));
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message())
    })?;
    if let Some(first) = raw.unused.keys().next() {
        let names: Vec<&str> = raw.unused.keys().map(String::as_str).collect();
        bail!(
            "{}:{}: unused runtime config key(s): {}",
            path.display(),
            line_of_key(text, first),
            names.join(", ")
        );
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut config = RuntimeConfig::default();
    for (label, table) in &raw.key_value_store {
        let here = at(table.span());
        let table = table.get_ref();
        let kind = match table.get("type") {
            Some(toml::Value::String(kind)) => kind.as_str(),
            Some(_) => bail!("{here}: key_value_store.{label}: `type` must be a string"),
            None => {
                bail!("{here}: key_value_store.{label}: missing `type` (\"spin\" or \"redis\")")
            }
        };
        let allowed: &[&str] = match kind {
            "spin" => &["type", "path"],
            "redis" => &[
                "type",
                "url",
                "durability",
                "sequences",
                "peer_timeout",
                "journal_days",
            ],
            other => bail!(
                "{here}: key_value_store.{label}: store type `{other}` is not supported by kiosk-host (use \"spin\" or \"redis\")"
            ),
        };
        if let Some(extra) = table.keys().find(|k| !allowed.contains(&k.as_str())) {
            bail!("{here}: key_value_store.{label}: unknown key `{extra}` for type \"{kind}\"");
        }
        let store = match kind {
            "spin" => KvStoreConfig::Spin {
                path: match table.get("path") {
                    None => None,
                    Some(toml::Value::String(p)) => Some(base.join(p)),
                    Some(_) => bail!("{here}: key_value_store.{label}: `path` must be a string"),
                },
            },
            _ => match table.get("url") {
                Some(toml::Value::String(url))
                    if url.starts_with("redis://") || url.starts_with("rediss://") =>
                {
                    KvStoreConfig::Redis {
                        url: url.clone(),
                        durability: match table.get("durability") {
                            None => RedisDurability::Durable,
                            Some(toml::Value::String(d)) if d == "durable" => {
                                RedisDurability::Durable
                            }
                            Some(toml::Value::String(d)) if d == "volatile" => {
                                RedisDurability::Volatile
                            }
                            Some(_) => bail!(
                                "{here}: key_value_store.{label}: `durability` must be \"durable\" or \"volatile\""
                            ),
                        },
                        fence: sequence_fence(table, &format!("{here}: key_value_store.{label}"))?,
                    }
                }
                Some(_) => bail!("{here}: key_value_store.{label}: `url` must be a redis:// URL"),
                None => bail!("{here}: key_value_store.{label}: missing `url`"),
            },
        };
        config.key_value_stores.insert(label.clone(), store);
    }
    Ok(config)
}

/// `sequences`, `peer_timeout` and `journal_days` of a Redis store table;
/// `at` (file:line and table) starts every error.
fn sequence_fence(table: &toml::Table, at: &str) -> anyhow::Result<Option<SequenceFence>> {
    let Some(sequences) = table.get("sequences") else {
        if let Some(key) = ["peer_timeout", "journal_days"]
            .into_iter()
            .find(|k| table.contains_key(*k))
        {
            bail!("{at}: `{key}` applies to the sequence fence: set `sequences` too");
        }
        return Ok(None);
    };
    let list_error = || {
        anyhow::anyhow!(
            "{at}: `sequences` must be a list of key prefixes, e.g. sequences = [\"lane-seq:\"]"
        )
    };
    let toml::Value::Array(items) = sequences else {
        return Err(list_error());
    };
    if items.is_empty() {
        bail!("{at}: `sequences` is empty: list key prefixes, or leave it out");
    }
    let mut prefixes = Vec::with_capacity(items.len());
    for item in items {
        match item {
            toml::Value::String(p) if p.is_empty() => {
                bail!("{at}: `sequences`: an empty prefix would fence every key")
            }
            toml::Value::String(p) if p.starts_with("kiosk-fence:") => {
                bail!("{at}: `sequences`: the prefix `kiosk-fence:` is the fence's own")
            }
            toml::Value::String(p) => prefixes.push(p.clone()),
            _ => return Err(list_error()),
        }
    }
    let peer_timeout = match table.get("peer_timeout") {
        None => kiosk_kv::fence::DEFAULT_PEER_TIMEOUT,
        Some(toml::Value::String(text)) => match humantime::parse_duration(text) {
            Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(600) => d,
            _ => bail!(
                "{at}: `peer_timeout` must be a duration from \"1s\" to \"10m\", e.g. \"30s\""
            ),
        },
        Some(_) => bail!("{at}: `peer_timeout` must be a duration string, e.g. \"30s\""),
    };
    let journal_days = match table.get("journal_days") {
        None => kiosk_kv::fence::DEFAULT_JOURNAL_DAYS,
        Some(toml::Value::Integer(days)) if (1..=366).contains(days) => *days as u32,
        Some(_) => bail!("{at}: `journal_days` must be a number of days from 1 to 366"),
    };
    Ok(Some(SequenceFence {
        sequences: prefixes,
        peer_timeout,
        journal_days,
    }))
}

/// The line where top-level key `key` first appears (as a table header or
/// an assignment); serde's flattened maps keep no spans.
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches('[').trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with([' ', '=', '.', ']', '\t']))
        })
        .map_or(1, |index| index + 1)
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_at(text: &str) -> anyhow::Result<RuntimeConfig> {
        parse(text, Path::new("/etc/kiosk/runtime-config.toml"))
    }

    #[test]
    fn spin_and_redis_stores_are_read() {
        let config = parse_at(
            r#"
[key_value_store.default]
type = "spin"
path = "data/kv.db"

[key_value_store.shared]
type = "redis"
url = "redis://127.0.0.1:6379"

[key_value_store.scratch]
type = "spin"
"#,
        )
        .unwrap();
        assert_eq!(
            config.key_value_stores["default"],
            KvStoreConfig::Spin {
                path: Some(PathBuf::from("/etc/kiosk/data/kv.db"))
            }
        );
        assert_eq!(
            config.key_value_stores["shared"],
            KvStoreConfig::Redis {
                durability: RedisDurability::Durable,
                url: "redis://127.0.0.1:6379".into(),
                fence: None,
            }
        );
        assert_eq!(
            config.key_value_stores["scratch"],
            KvStoreConfig::Spin { path: None }
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let err = parse_at("\n\n[sqlite_database.default]\ntype = \"spin\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/kiosk/runtime-config.toml:3:"),
            "{err}"
        );
        assert!(
            err.contains("unused runtime config key(s): sqlite_database"),
            "{err}"
        );

        let err = parse_at("[key_value_store.x]\ntype = \"azure_cosmos\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":1:") && err.contains("`azure_cosmos` is not supported"),
            "{err}"
        );

        let err = parse_at("[key_value_store.x]\ntype = \"redis\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing `url`"), "{err}");

        let err = parse_at("[key_value_store.x]\ntype = \"spin\"\npaht = \"a.db\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `paht`"), "{err}");

        let err = parse_at("[key_value_store.x\n").unwrap_err().to_string();
        assert!(
            err.starts_with("/etc/kiosk/runtime-config.toml:1:"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_file_configures_nothing() {
        assert_eq!(parse_at("").unwrap(), RuntimeConfig::default());
    }

    #[test]
    fn redis_durability_is_durable_unless_declared_volatile() {
        let config = parse_at(
            "[key_value_store.a]\ntype = \"redis\"\nurl = \"redis://h\"\ndurability = \"volatile\"\n",
        )
        .unwrap();
        assert_eq!(
            config.key_value_stores["a"],
            KvStoreConfig::Redis {
                url: "redis://h".into(),
                durability: RedisDurability::Volatile,
                fence: None,
            }
        );
        let err = parse_at(
            "[key_value_store.a]\ntype = \"redis\"\nurl = \"redis://h\"\ndurability = \"maybe\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("/etc/kiosk/runtime-config.toml:1:"),
            "{err}"
        );
        assert!(err.contains("durability"), "{err}");
    }

    #[test]
    fn sequences_declare_the_fenced_keys_with_their_timings() {
        let config = parse_at(
            "[key_value_store.a]\ntype = \"redis\"\nurl = \"redis://h\"\nsequences = [\"lane-seq:\"]\n",
        )
        .unwrap();
        let KvStoreConfig::Redis { fence, .. } = &config.key_value_stores["a"] else {
            panic!("{config:?}")
        };
        assert_eq!(
            fence,
            &Some(SequenceFence {
                sequences: vec!["lane-seq:".into()],
                peer_timeout: Duration::from_secs(30),
                journal_days: 7,
            })
        );
        let config = parse_at(
            "[key_value_store.a]\ntype = \"redis\"\nurl = \"redis://h\"\nsequences = [\"a:\", \"b:\"]\npeer_timeout = \"5s\"\njournal_days = 2\n",
        )
        .unwrap();
        let KvStoreConfig::Redis {
            fence: Some(fence), ..
        } = &config.key_value_stores["a"]
        else {
            panic!("{config:?}")
        };
        assert_eq!(fence.sequences, ["a:", "b:"]);
        assert_eq!(fence.peer_timeout, Duration::from_secs(5));
        assert_eq!(fence.journal_days, 2);
    }

    #[test]
    fn bad_sequences_are_errors_with_the_line() {
        for (extra, needle) in [
            ("sequences = \"lane-seq:\"", "must be a list"),
            ("sequences = []", "is empty"),
            ("sequences = [\"\"]", "empty prefix"),
            ("sequences = [1]", "must be a list"),
            ("sequences = [\"kiosk-fence:x\"]", "fence's own"),
            ("peer_timeout = \"5s\"", "set `sequences` too"),
            (
                "sequences = [\"s:\"]\npeer_timeout = \"soon\"",
                "peer_timeout",
            ),
            (
                "sequences = [\"s:\"]\npeer_timeout = \"1h\"",
                "peer_timeout",
            ),
            ("sequences = [\"s:\"]\njournal_days = 0", "journal_days"),
        ] {
            let err = parse_at(&format!(
                "\n[key_value_store.a]\ntype = \"redis\"\nurl = \"redis://h\"\n{extra}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("/etc/kiosk/runtime-config.toml:2:") && err.contains(needle),
                "{extra}: {err}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_text_is_a_runtime_config_or_an_error_with_a_line(
            lines in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just("[key_value_store.default]".to_string()),
                proptest::strategy::Just("type = \"redis\"".to_string()),
                proptest::strategy::Just("type = \"spin\"".to_string()),
                "(path|url|type|durability|peer_timeout) = \"[ -~]{0,16}\"",
                "(sequences|journal_days) = [ -~]{0,16}",
                "[ -~]{0,30}",
            ], 0..10)
        ) {
            let text = lines.join("\n");
            if let Err(e) = parse_at(&text) {
                proptest::prop_assert!(
                    e.to_string().starts_with("/etc/kiosk/runtime-config.toml:"),
                    "{e}"
                );
            }
        }
    }
}
