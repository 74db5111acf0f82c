//! Application variables, resolved as Spin's built-in providers resolve them:
//! `SPIN_VARIABLE_<NAME>` from the process environment, then the same key in
//! a `.env` file beside the manifest, then the manifest's `default`.
//! Values are resolved once at start-up; a required variable with no value
//! stops start-up, naming it. Secret values never reach a log line.
//!
//! The host configuration may fix non-secret variables for its environment
//! (`[variables]`, and `environment`): such a value cannot be changed by
//! `SPIN_VARIABLE_*` or `.env` (a different value there stops start-up,
//! naming both), so a production host cannot be talked into another
//! environment by a stray variable.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use kiosk_manifest::{ComponentDef, Manifest, Template};

/// Every application variable's value.
#[derive(Clone, Default)]
pub struct AppVariables {
    values: BTreeMap<String, String>,
    secrets: Vec<String>,
}

impl std::fmt::Debug for AppVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be secrets.
        f.debug_struct("AppVariables")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The environment key Spin's env provider reads for variable `name`.
pub fn env_key(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// Reads `.env` beside the manifest, if there is one.
pub fn read_dotenv(app_root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let path = app_root.join(".env");
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let mut values = BTreeMap::new();
    for item in
        dotenvy::from_path_iter(&path).with_context(|| format!("reading {}", path.display()))?
    {
        let (key, value) = item.with_context(|| format!("parsing {}", path.display()))?;
        values.insert(key, value);
    }
    Ok(values)
}

impl AppVariables {
    /// Resolves every `[variables]` entry: `host` (the values the host
    /// configuration fixes), else `env` (the process environment), then
    /// `dotenv`, then the default. `host` may name only declared,
    /// non-secret variables, and `env` or `dotenv` may not contradict it.
    pub fn resolve(
        manifest: &Manifest,
        env: impl Fn(&str) -> Option<String>,
        dotenv: &BTreeMap<String, String>,
        host: &BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        for name in host.keys() {
            match manifest.variables.get(name) {
                None => bail!(
                    "the host configuration sets variable `{name}`, which {} does not declare",
                    manifest.path.display()
                ),
                Some(def) if def.secret => bail!(
                    "the host configuration may not hold secret variable `{name}`: give it with {} instead",
                    env_key(name)
                ),
                Some(_) => {}
            }
        }
        let mut resolved = Self::default();
        let mut missing = Vec::new();
        for (name, def) in &manifest.variables {
            let key = env_key(name);
            let supplied = env(&key).map(|v| (v, key.clone())).or_else(|| {
                dotenv
                    .get(&key)
                    .map(|v| (v.clone(), format!("{key} in .env")))
            });
            let value = match (host.get(name), supplied) {
                (Some(fixed), Some((other, source))) if *fixed != other => bail!(
                    "variable `{name}`: the host configuration fixes it, and {source} says otherwise; set it in one place"
                ),
                (Some(fixed), _) => Some(fixed.clone()),
                (None, supplied) => supplied.map(|(v, _)| v).or_else(|| def.default.clone()),
            };
            match value {
                Some(value) => {
                    resolved.values.insert(name.clone(), value);
                }
                None => missing.push(name.as_str()),
            }
            if def.secret {
                resolved.secrets.push(name.clone());
            }
        }
        if !missing.is_empty() {
            bail!(
                "no provider resolved required variable(s): [{}] (set {} or add them to .env)",
                missing.join(", "),
                missing
                    .iter()
                    .map(|n| env_key(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(resolved)
    }

    /// The value of application variable `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether `name` is declared `secret = true`.
    pub fn is_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s == name)
    }

    /// Renders a template over the application variables.
    pub fn render(&self, template: &Template) -> anyhow::Result<String> {
        template
            .render(|name| self.get(name).map(str::to_string))
            .map_err(|e| anyhow::anyhow!("invalid variable template `{}`: {e}", template.as_str()))
    }

    /// The component's own variables (`[component.X.variables]`), rendered.
    pub fn for_component(&self, def: &ComponentDef) -> anyhow::Result<ComponentVariables> {
        let mut values = BTreeMap::new();
        for (name, template) in &def.variables {
            let value = self
                .render(template)
                .with_context(|| format!("component `{}`: variable `{name}`", def.id))?;
            values.insert(name.clone(), value);
        }
        Ok(ComponentVariables {
            component: def.id.clone(),
            values,
        })
    }
}

/// What one component may read through `fermyon:spin/variables` and
/// `wasi:config/store`: only the variables its manifest entry declares.
#[derive(Clone, Default)]
pub struct ComponentVariables {
    component: String,
    values: BTreeMap<String, String>,
}

/// Why a guest's variable lookup failed (mapped onto each interface's errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// Not a valid variable name.
    InvalidName(String),
    /// The component does not declare this variable.
    Undefined(String),
}

impl ComponentVariables {
    /// Looks up `name` as `fermyon:spin/variables.get` does.
    pub fn get(&self, name: &str) -> Result<&str, LookupError> {
        if !is_valid_name(name) {
            return Err(LookupError::InvalidName(format!(
                "invalid variable name {name:?}: use lowercase letters, digits and single underscores, starting with a letter"
            )));
        }
        self.values.get(name).map(String::as_str).ok_or_else(|| {
            LookupError::Undefined(format!("no variable for {:?}.{name:?}", self.component))
        })
    }

    /// Every variable of the component, resolved (`wasi:config/store.get-all`).
    pub fn all(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Spin's rule for names a guest asks for: lowercase ASCII letters, digits
/// and `_`, starting with a letter, ending alphanumeric, no `__`.
fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'_'
        && !name.contains("__")
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        kiosk_manifest::parse(text, Path::new("/app/spin.toml")).unwrap()
    }

    const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "vars"
[variables]
greeting = { default = "hello" }
api_key = { required = true, secret = true }
region = { default = "kr" }
[[trigger.http]]
route = "/"
component = "web"
[component.web]
source = "web.wasm"
[component.web.variables]
message = "{{ greeting }}, {{region}}!"
key = "{{ api_key }}"
"#;

    fn env_with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment_beats_dotenv_beats_default() {
        let m = manifest(APP);
        let dotenv = BTreeMap::from([
            (
                "SPIN_VARIABLE_API_KEY".to_string(),
                "from-dotenv".to_string(),
            ),
            ("SPIN_VARIABLE_REGION".to_string(), "jp".to_string()),
        ]);
        let vars = AppVariables::resolve(
            &m,
            env_with(&[("SPIN_VARIABLE_REGION", "us")]),
            &dotenv,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(vars.get("api_key"), Some("from-dotenv"));
        assert_eq!(vars.get("region"), Some("us"));
        assert_eq!(vars.get("greeting"), Some("hello"));
        assert!(vars.is_secret("api_key"));
        assert!(!vars.is_secret("region"));
    }

    #[test]
    fn a_required_variable_without_a_value_stops_start_up_by_name() {
        let m = manifest(APP);
        let err = AppVariables::resolve(&m, env_with(&[]), &BTreeMap::new(), &BTreeMap::new())
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("[api_key]"), "{text}");
        assert!(text.contains("SPIN_VARIABLE_API_KEY"), "{text}");
    }

    #[test]
    fn component_templates_render_mixed_text_and_names_are_checked() {
        let m = manifest(APP);
        let vars = AppVariables::resolve(
            &m,
            env_with(&[("SPIN_VARIABLE_API_KEY", "s3cret")]),
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        let web = vars.for_component(&m.components["web"]).unwrap();
        assert_eq!(web.get("message"), Ok("hello, kr!"));
        assert_eq!(web.get("key"), Ok("s3cret"));
        assert!(
            matches!(web.get("greeting"), Err(LookupError::Undefined(m)) if m.contains("\"web\".\"greeting\""))
        );
        assert!(matches!(
            web.get("Message"),
            Err(LookupError::InvalidName(_))
        ));
        assert!(matches!(web.get("a__b"), Err(LookupError::InvalidName(_))));
        assert!(matches!(
            web.get("trailing_"),
            Err(LookupError::InvalidName(_))
        ));
        assert_eq!(web.all().count(), 2);
    }

    #[test]
    fn debug_output_never_shows_values() {
        let m = manifest(APP);
        let vars = AppVariables::resolve(
            &m,
            env_with(&[("SPIN_VARIABLE_API_KEY", "s3cret")]),
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        assert!(!format!("{vars:?}").contains("s3cret"));
    }

    #[test]
    fn the_host_configuration_fixes_non_secret_variables() {
        let m = manifest(APP);
        const KEY: (&str, &str) = ("SPIN_VARIABLE_API_KEY", "s3cret");
        let host = BTreeMap::from([("region".to_string(), "kr-2".to_string())]);
        let vars = AppVariables::resolve(&m, env_with(&[KEY]), &BTreeMap::new(), &host).unwrap();
        assert_eq!(vars.get("region"), Some("kr-2"));
        // The same value elsewhere is fine; another one stops start-up.
        let same = AppVariables::resolve(
            &m,
            env_with(&[KEY, ("SPIN_VARIABLE_REGION", "kr-2")]),
            &BTreeMap::new(),
            &host,
        );
        assert!(same.is_ok());
        let dotenv = BTreeMap::from([("SPIN_VARIABLE_REGION".to_string(), "us".to_string())]);
        let err = AppVariables::resolve(&m, env_with(&[KEY]), &dotenv, &host)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`region`") && err.contains(".env"), "{err}");
        assert!(!err.contains("kr-2") && !err.contains("us"), "{err}");
        // Secrets and undeclared names are refused.
        for (name, expected) in [("api_key", "secret"), ("regoin", "does not declare")] {
            let host = BTreeMap::from([(name.to_string(), "x".to_string())]);
            let err = AppVariables::resolve(&m, env_with(&[KEY]), &BTreeMap::new(), &host)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn env_keys_are_upper_cased() {
        assert_eq!(env_key("core_base_url"), "SPIN_VARIABLE_CORE_BASE_URL");
    }

    #[test]
    fn dotenv_is_read_beside_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "SPIN_VARIABLE_API_KEY=abc\n# comment\nOTHER=\"quoted value\"\n",
        )
        .unwrap();
        let values = read_dotenv(dir.path()).unwrap();
        assert_eq!(values["SPIN_VARIABLE_API_KEY"], "abc");
        assert_eq!(values["OTHER"], "quoted value");
        assert!(read_dotenv(&dir.path().join("none")).unwrap().is_empty());
    }
}
