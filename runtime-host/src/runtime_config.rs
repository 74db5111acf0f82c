//! The runtime configuration file (`--runtime-config-file`), in Spin's
//! syntax: `[key_value_store.LABEL]` with `type = "spin"` (embedded SQLite,
//! optional `path` relative to this file; no path means in memory) or
//! `type = "redis"` (`url`). Keys the host would not use are refused with
//! file:line, as Spin refuses unused keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    },
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
            "redis" => &["type", "url", "durability"],
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
                url: "redis://127.0.0.1:6379".into()
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
                durability: RedisDurability::Volatile
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_text_is_a_runtime_config_or_an_error_with_a_line(
            lines in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just("[key_value_store.default]".to_string()),
                proptest::strategy::Just("type = \"redis\"".to_string()),
                proptest::strategy::Just("type = \"spin\"".to_string()),
                "(path|url|type|durability) = \"[ -~]{0,16}\"",
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
