//! The manifest as written: serde shapes mirroring Spin 4.0.2's
//! `spin_manifest::schema::v2`, with spans kept for later validation.
//!
//! Fields whose value may take several forms are read through `toml::Value`
//! (`try_from`), so that a malformed value is reported with a clear message
//! at its own position.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use toml::{Spanned, Table, Value};

/// Only reads `spin_manifest_version`, to pick the schema before anything else.
#[derive(Deserialize)]
pub(crate) struct VersionProbe {
    pub spin_manifest_version: Option<Spanned<Value>>,
}

/// A TOML table read as its entries in file order, keys with their spans.
pub(crate) struct Entries<V>(pub Vec<(Spanned<String>, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// A table keyed by trigger type: the `http` entry is read as `H`, any other as `O`.
pub(crate) struct ByTriggerType<H, O> {
    pub http: Option<H>,
    pub others: Vec<(Spanned<String>, O)>,
}

impl<H, O> Default for ByTriggerType<H, O> {
    fn default() -> Self {
        Self {
            http: None,
            others: Vec::new(),
        }
    }
}

impl<'de, H: Deserialize<'de>, O: Deserialize<'de>> Deserialize<'de> for ByTriggerType<H, O> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByTypeVisitor<H, O>(PhantomData<(H, O)>);
        impl<'de, H: Deserialize<'de>, O: Deserialize<'de>> Visitor<'de> for ByTypeVisitor<H, O> {
            type Value = ByTriggerType<H, O>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of trigger types")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = ByTriggerType::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    if key.get_ref() == "http" {
                        out.http = Some(map.next_value()?);
                    } else {
                        out.others.push((key, map.next_value()?));
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(ByTypeVisitor(PhantomData))
    }
}

/// `spin.toml`, version 2.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    /// Checked beforehand by [`VersionProbe`].
    #[serde(rename = "spin_manifest_version")]
    _version: IgnoredAny,
    pub application: RawApplication,
    #[serde(default)]
    pub variables: Entries<RawVariable>,
    /// Required, as in Spin.
    pub trigger: ByTriggerType<Vec<Spanned<RawHttpTrigger>>, IgnoredAny>,
    #[serde(default)]
    pub component: Entries<Spanned<RawComponent>>,
}

/// `[application]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApplication {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default, rename = "targets")]
    _targets: Vec<RawTarget>,
    #[serde(default)]
    pub trigger: ByTriggerType<Spanned<RawHttpAppConfig>, Table>,
    #[serde(default, rename = "tool")]
    _tool: BTreeMap<String, Table>,
}

/// `[application.trigger.http]`, as Spin's HTTP trigger reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpAppConfig {
    #[serde(default)]
    pub base: Option<Spanned<String>>,
}

/// `[variables.NAME]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVariable {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub secret: bool,
}

/// One `[[trigger.http]]`, as Spin's `HttpTriggerConfig` (plus `id`) reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpTrigger {
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    #[serde(default)]
    pub component: Option<Spanned<RawComponentSpec>>,
    #[serde(default)]
    pub static_response: Option<Spanned<Table>>,
    pub route: Spanned<RawRoute>,
    #[serde(default)]
    pub executor: Option<Spanned<RawExecutor>>,
}

/// `component = "id"` or an inline component table.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
pub(crate) enum RawComponentSpec {
    Reference(String),
    Inline,
}

impl TryFrom<Value> for RawComponentSpec {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(id) => Ok(Self::Reference(id)),
            Value::Table(_) => Ok(Self::Inline),
            other => Err(format!(
                "`component` must be a component ID string or an inline component table, not {}",
                other.type_str()
            )),
        }
    }
}

/// `route = "/path/..."` or `route = { private = true|false }`.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
pub(crate) enum RawRoute {
    Path(String),
    Private(bool),
}

impl TryFrom<Value> for RawRoute {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        const EXPECTED: &str = "route must be a string pattern or '{ private = true }'";
        match value {
            Value::String(path) => Ok(Self::Path(path)),
            Value::Table(table) => match table.get("private") {
                Some(Value::Boolean(private)) if table.len() == 1 => Ok(Self::Private(*private)),
                _ => Err(EXPECTED.to_owned()),
            },
            _ => Err(EXPECTED.to_owned()),
        }
    }
}

/// `executor = { type = "http" | "spin" | "wagi", ... }`.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
pub(crate) enum RawExecutor {
    Http,
    Wagi,
}

impl TryFrom<Value> for RawExecutor {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        let Value::Table(table) = value else {
            return Err("`executor` must be a table such as `{ type = \"http\" }`".to_owned());
        };
        match table.get("type").and_then(Value::as_str) {
            Some("http" | "spin") => {
                check_fields(&table, &["type"], &[])?;
                Ok(Self::Http)
            }
            Some("wagi") => {
                check_fields(&table, &["type"], &["entrypoint", "argv"])?;
                Ok(Self::Wagi)
            }
            Some(other) => Err(format!(
                "unknown executor type `{other}`, expected `http` or `wagi`"
            )),
            None => Err("`executor` must have a string field `type`".to_owned()),
        }
    }
}

/// `[component.ID]`, as Spin's `Component` reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComponent {
    pub source: Spanned<RawSource>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub variables: Entries<Spanned<String>>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Read as values so that a malformed entry is reported at its own position
    /// (see [`RawFileMount`]).
    #[serde(default)]
    pub files: Vec<Spanned<Value>>,
    #[serde(default)]
    pub exclude_files: Vec<Spanned<String>>,
    #[serde(default)]
    pub allowed_http_hosts: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub key_value_stores: Vec<Spanned<String>>,
    #[serde(default)]
    pub sqlite_databases: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub ai_models: Option<Spanned<Vec<String>>>,
    #[serde(default, rename = "targets")]
    _targets: Option<Vec<RawTarget>>,
    #[serde(default)]
    pub build: Option<RawBuild>,
    #[serde(default, rename = "tool")]
    _tool: BTreeMap<String, Table>,
    #[serde(default, rename = "dependencies_inherit_configuration")]
    _dependencies_inherit_configuration: Option<bool>,
    #[serde(default)]
    pub dependencies: Option<Spanned<Table>>,
    #[serde(default)]
    pub profile: Option<Spanned<Table>>,
}

/// `source = "path.wasm"`, `{ url, digest }` or `{ registry?, package, version }`.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
pub(crate) enum RawSource {
    Local(String),
    Remote,
    Registry,
}

impl TryFrom<Value> for RawSource {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        const EXPECTED: &str = "`source` must be a path string, `{ url = \"...\", digest = \"...\" }` \
             or `{ registry = \"...\", package = \"...\", version = \"...\" }`";
        match value {
            Value::String(path) => Ok(Self::Local(path)),
            Value::Table(table) if table.contains_key("url") => {
                check_fields(&table, &["url", "digest"], &[])
                    .map_err(|e| format!("{EXPECTED}: {e}"))?;
                Ok(Self::Remote)
            }
            Value::Table(table) => {
                check_fields(&table, &["package", "version"], &["registry"])
                    .map_err(|e| format!("{EXPECTED}: {e}"))?;
                Ok(Self::Registry)
            }
            _ => Err(EXPECTED.to_owned()),
        }
    }
}

/// A `files` entry: a glob/path, or `{ source, destination }`.
pub(crate) enum RawFileMount {
    Pattern(String),
    Placement { source: String, destination: String },
}

impl TryFrom<Value> for RawFileMount {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        const EXPECTED: &str = "a `files` entry must be a glob or path string, \
             or `{ source = \"...\", destination = \"...\" }`";
        match value {
            Value::String(pattern) => Ok(Self::Pattern(pattern)),
            Value::Table(mut table) => {
                check_fields(&table, &["source", "destination"], &[])
                    .map_err(|e| format!("{EXPECTED}: {e}"))?;
                Ok(Self::Placement {
                    source: take_string(&mut table, "source"),
                    destination: take_string(&mut table, "destination"),
                })
            }
            _ => Err(EXPECTED.to_owned()),
        }
    }
}

/// `build = { command, workdir?, watch? }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    pub command: RawCommands,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

/// `command = "one"` or `command = ["one", "two"]`.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
pub(crate) struct RawCommands(pub Vec<String>);

impl TryFrom<Value> for RawCommands {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        const EXPECTED: &str = "`command` must be a string or a list of strings";
        match value {
            Value::String(command) => Ok(Self(vec![command])),
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(command) => Ok(command),
                    _ => Err(EXPECTED.to_owned()),
                })
                .collect::<Result<_, _>>()
                .map(Self),
            _ => Err(EXPECTED.to_owned()),
        }
    }
}

/// A `targets` entry: `"env-id"`, `{ url = "..." }` or `{ path = "..." }`. Ignored.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
struct RawTarget;

impl TryFrom<Value> for RawTarget {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        const EXPECTED: &str =
            "a `targets` entry must be a string, `{ url = \"...\" }` or `{ path = \"...\" }`";
        let ok = match &value {
            Value::String(_) => true,
            Value::Table(table) if table.contains_key("url") => {
                check_fields(table, &["url"], &[]).is_ok()
            }
            Value::Table(table) => check_fields(table, &["path"], &[]).is_ok(),
            _ => false,
        };
        ok.then_some(Self).ok_or_else(|| EXPECTED.to_owned())
    }
}

/// Checks that `table` has all `required` keys, no keys outside
/// `required` + `optional`, and only string values for them.
fn check_fields(table: &Table, required: &[&str], optional: &[&str]) -> Result<(), String> {
    for key in table.keys() {
        if !required.contains(&key.as_str()) && !optional.contains(&key.as_str()) {
            let expected: Vec<String> = required
                .iter()
                .chain(optional)
                .map(|k| format!("`{k}`"))
                .collect();
            return Err(format!(
                "unknown field `{key}`, expected {}",
                expected.join(", ")
            ));
        }
    }
    for key in required {
        if !table.contains_key(*key) {
            return Err(format!("missing field `{key}`"));
        }
    }
    for (key, value) in table {
        if !value.is_str() {
            return Err(format!("field `{key}` must be a string"));
        }
    }
    Ok(())
}

/// Removes a string value already checked by [`check_fields`].
fn take_string(table: &mut Table, key: &str) -> String {
    match table.remove(key) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    }
}
