//! Whole-crate tests: parsing, validation errors (exact text) and file resolution.

use std::fs;
use std::path::{Path, PathBuf};

use crate::*;

fn parse_ok(source: &str) -> Manifest {
    match parse(source, Path::new("spin.toml")) {
        Ok(manifest) => manifest,
        Err(error) => panic!("unexpected error: {error}"),
    }
}

fn parse_err(source: &str) -> ManifestError {
    match parse(source, Path::new("spin.toml")) {
        Ok(_) => panic!("manifest unexpectedly valid"),
        Err(error) => error,
    }
}

fn error_text(source: &str) -> String {
    parse_err(source).to_string()
}

const FULL: &str = r#"spin_manifest_version = 2

[application]
name = "kiosk-demo"
version = "1.2.3"
description = "A demo"
authors = ["Ada <ada@example.com>"]
targets = ["spin-up:3.3"]

[application.trigger.http]
base = "/"

[application.tool.something]
anything = 1

[variables]
api_host = { default = "api.example.com" }
api_token = { required = true, secret = true, description = "The token" }

[[trigger.http]]
route = "/..."
component = "web"

[[trigger.http]]
id = "internal"
route = { private = true }
component = "api-v2"
executor = { type = "http" }

[component.web]
source = "target/web.wasm"
description = "Static files"
files = ["static/**/*", { source = "assets", destination = "/assets" }]
exclude_files = ["static/secret.txt"]
key_value_stores = ["default", "my_store"]
sqlite_databases = []
build = { command = "cargo build --release", workdir = "web", watch = ["src/**/*.rs"] }

[component.api-v2]
source = "/opt/api.wasm"
allowed_outbound_hosts = ["https://{{ api_host }}", "redis://localhost:6379"]
environment = { RUST_LOG = "info" }
dependencies_inherit_configuration = false
[component.api-v2.variables]
token = "Bearer {{ api_token }}"
plain = "literal"
[component.api-v2.build]
command = ["npm install", "npm run build"]
"#;

#[test]
fn full_manifest() {
    let manifest = parse(FULL, Path::new("/apps/demo/spin.toml")).unwrap();
    assert_eq!(manifest.path, Path::new("/apps/demo/spin.toml"));
    assert_eq!(manifest.app_root, Path::new("/apps/demo"));
    assert_eq!(
        manifest.application,
        Application {
            name: "kiosk-demo".into(),
            version: Some("1.2.3".into()),
            description: Some("A demo".into()),
            authors: vec!["Ada <ada@example.com>".into()],
        }
    );
    assert_eq!(manifest.warnings.len(), 1);
    assert!(
        manifest.warnings[0]
            .starts_with("/apps/demo/spin.toml:11:8: the deprecated trigger 'base'"),
        "{}",
        manifest.warnings[0]
    );

    assert_eq!(
        manifest.variables["api_host"],
        VariableDef {
            description: None,
            required: false,
            default: Some("api.example.com".into()),
            secret: false,
        }
    );
    assert_eq!(
        manifest.variables["api_token"],
        VariableDef {
            description: Some("The token".into()),
            required: true,
            default: None,
            secret: true,
        }
    );

    let [public, private] = manifest.http_triggers.as_slice() else {
        panic!("expected two triggers: {:?}", manifest.http_triggers);
    };
    assert_eq!(public.id, "web-http-trigger");
    assert_eq!(public.component, "web");
    assert_eq!(public.route, RouteSpec::Path("/...".into()));
    assert_eq!((public.location.line, public.location.column), (20, 1));
    assert_eq!(private.id, "internal");
    assert_eq!(private.component, "api-v2");
    assert_eq!(private.route, RouteSpec::Private);

    let web = &manifest.components["web"];
    assert_eq!(web.id, "web");
    assert_eq!(web.source, Path::new("/apps/demo/target/web.wasm"));
    assert_eq!(web.description.as_deref(), Some("Static files"));
    assert_eq!(
        web.files,
        [
            FileMount::Pattern("static/**/*".into()),
            FileMount::Mapping {
                source: "assets".into(),
                destination: "/assets".into()
            }
        ]
    );
    assert_eq!(web.exclude_files, ["static/secret.txt"]);
    assert_eq!(web.key_value_stores, ["default", "my_store"]);
    assert_eq!(
        web.build,
        Some(BuildDef {
            command: vec!["cargo build --release".into()],
            workdir: Some("/apps/demo/web".into()),
            watch: vec!["src/**/*.rs".into()],
        })
    );
    assert_eq!(web.location.to_string(), "/apps/demo/spin.toml:30:1");

    let api = &manifest.components["api-v2"];
    assert_eq!(api.source, Path::new("/opt/api.wasm"));
    assert_eq!(
        api.allowed_outbound_hosts,
        ["https://{{ api_host }}", "redis://localhost:6379"]
    );
    assert_eq!(api.environment["RUST_LOG"], "info");
    let token = &api.variables["token"];
    assert_eq!(token.variables().collect::<Vec<_>>(), ["api_token"]);
    let rendered = token.render(|name| (name == "api_token").then(|| "s3cret".to_owned()));
    assert_eq!(rendered.unwrap(), "Bearer s3cret");
    assert!(api.variables["plain"].is_literal());
    let build = api.build.as_ref().unwrap();
    assert_eq!(build.command, ["npm install", "npm run build"]);
    assert_eq!(build.workdir, None);
    assert!(build.watch.is_empty());
}

#[test]
fn relative_manifest_path_gets_absolute_app_root() {
    let manifest = parse(FULL, Path::new("spin.toml")).unwrap();
    assert!(manifest.app_root.is_absolute());
    assert_eq!(manifest.app_root, std::env::current_dir().unwrap());
    assert_eq!(manifest.path, Path::new("spin.toml"));
}

#[test]
fn generated_trigger_ids_follow_spin() {
    let manifest = parse_ok(
        r#"spin_manifest_version = 2
application.name = "app"
[[trigger.http]]
route = "/a"
component = "web"
[[trigger.http]]
route = "/b"
component = "web"
[[trigger.http]]
route = "/c"
component = "web"
id = "http-trigger1"
[component.web]
source = "web.wasm"
"#,
    );
    let ids: Vec<&str> = manifest
        .http_triggers
        .iter()
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(ids, ["web-http-trigger", "http-trigger2", "http-trigger1"]);
}

#[test]
fn bad_version() {
    assert_eq!(
        error_text("spin_manifest_version = 3\n[application]\nname = \"app\"\n"),
        "spin.toml:1:25: unsupported spin_manifest_version 3: expected `spin_manifest_version = 2`"
    );
}

#[test]
fn version_1_is_not_supported() {
    assert_eq!(
        error_text("spin_manifest_version = \"1\"\nname = \"app\"\n"),
        "spin.toml:1:25: unsupported spin_manifest_version \"1\": version 1 manifests are not \
         supported by kiosk-host; convert the manifest to `spin_manifest_version = 2`"
    );
}

#[test]
fn missing_version() {
    assert_eq!(
        error_text("[application]\nname = \"app\"\n"),
        "spin.toml:1:1: missing field `spin_manifest_version` (expected `spin_manifest_version = 2`)"
    );
}

#[test]
fn toml_syntax_error() {
    let error = parse_err("spin_manifest_version = 2\n[application\nname = \"app\"\n");
    assert!(matches!(error, ManifestError::Parse { .. }), "{error:?}");
    assert_eq!(
        error.location().map(|l| (l.line, l.column)),
        Some((2, 13)),
        "{error}"
    );
}

/// Header shared by most broken cases: lines 1 to 3.
const HEAD: &str = "spin_manifest_version = 2\n[application]\nname = \"app\"\n";

/// A valid trigger and component after [`HEAD`]: lines 4 to 8.
const WEB: &str = "[[trigger.http]]\nroute = \"/...\"\ncomponent = \"web\"\n[component.web]\nsource = \"web.wasm\"\n";

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        error_text("spin_manifest_version = 2\ncolour = \"blue\"\n[application]\nname = \"a\"\n"),
        "spin.toml:2:1: unknown field `colour`, expected one of `spin_manifest_version`, \
         `application`, `variables`, `trigger`, `component`"
    );
}

#[test]
fn unknown_application_key() {
    assert_eq!(
        error_text(&format!("{HEAD}colour = \"blue\"\n{WEB}")),
        "spin.toml:4:1: unknown field `colour`, expected one of `name`, `version`, \
         `description`, `authors`, `targets`, `trigger`, `tool`"
    );
}

#[test]
fn missing_trigger_table_as_in_spin() {
    assert_eq!(error_text(HEAD), "spin.toml:1:1: missing field `trigger`");
}

#[test]
fn unknown_component_key() {
    let error = parse_err(&format!("{HEAD}{WEB}sauce = \"tomato\"\n"));
    assert!(matches!(error, ManifestError::Parse { .. }));
    assert_eq!(
        error.to_string(),
        "spin.toml:9:1: unknown field `sauce`, expected one of `source`, `description`, \
         `variables`, `environment`, `files`, `exclude_files`, `allowed_http_hosts`, \
         `allowed_outbound_hosts`, `key_value_stores`, `sqlite_databases`, `ai_models`, \
         `targets`, `build`, `tool`, `dependencies_inherit_configuration`, `dependencies`, \
         `profile`"
    );
}

#[test]
fn unknown_build_key() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}{WEB}[component.web.build]\ncommand = \"make\"\ncwd = \"x\"\n"
        )),
        "spin.toml:11:1: unknown field `cwd`, expected one of `command`, `workdir`, `watch`"
    );
}

#[test]
fn trigger_referencing_missing_component() {
    let error = parse_err(&format!(
        "{HEAD}[[trigger.http]]\nroute = \"/\"\ncomponent = \"nope\"\n"
    ));
    assert!(matches!(error, ManifestError::Invalid { .. }));
    assert_eq!(
        error.to_string(),
        "spin.toml:6:13: [[trigger.http]] #1: component `nope` does not exist \
         (there is no [component.nope])"
    );
    let location = error.location().unwrap();
    assert_eq!(
        (location.file.as_path(), location.line, location.column),
        (Path::new("spin.toml"), 6, 13)
    );
}

#[test]
fn bad_component_id() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}{WEB}[component.my_comp]\nsource = \"c.wasm\"\n"
        )),
        "spin.toml:9:12: invalid component ID `my_comp`: words must be separated with '-', not '_'"
    );
}

#[test]
fn bad_component_reference_reports_every_place() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[[trigger.http]]\nroute = \"/\"\ncomponent = \"my_comp\"\n\
             [component.my_comp]\nsource = \"c.wasm\"\n"
        )),
        "spin.toml:6:13: [[trigger.http]] #1: invalid component ID `my_comp`: \
         words must be separated with '-', not '_'\n\
         spin.toml:7:12: invalid component ID `my_comp`: words must be separated with '-', not '_'"
    );
}

#[test]
fn bad_variable_name() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[variables]\nkey_1 = {{ default = \"x\" }}\n{WEB}"
        )),
        "spin.toml:5:1: invalid variable name `key_1`: '_'-separated words must start with \
         an ASCII letter; got '1'"
    );
    assert_eq!(
        error_text(&format!("{HEAD}[variables.Key]\ndefault = \"x\"\n{WEB}")),
        "spin.toml:4:12: invalid variable name `Key`: '_'-separated words must be all \
         lowercase or all UPPERCASE; got \"Key\""
    );
    assert_eq!(
        error_text(&format!(
            "{HEAD}[variables.API_KEY]\ndefault = \"x\"\n{WEB}"
        )),
        "spin.toml:4:12: invalid variable name `API_KEY`: Lower-case identifiers must be all \
         lowercase; got \"API_KEY\""
    );
}

#[test]
fn bad_component_variable_name() {
    assert_eq!(
        error_text(&format!("{HEAD}{WEB}variables = {{ a__b = \"x\" }}\n")),
        "spin.toml:9:15: component `web`: invalid variable name `a__b`: '_'-separated words \
         must not be empty"
    );
}

#[test]
fn variable_with_required_and_default() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[variables]\ntoken = {{ required = true, default = \"x\" }}\n{WEB}"
        )),
        "spin.toml:5:1: variable `token` must be `required` OR have a `default`"
    );
    assert_eq!(
        error_text(&format!("{HEAD}[variables.token]\nsecret = true\n{WEB}")),
        "spin.toml:4:12: variable `token` must be `required` OR have a `default`"
    );
}

#[test]
fn unknown_variable_key() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[variables.token]\ndefault = \"x\"\nsecrit = true\n{WEB}"
        )),
        "spin.toml:6:1: unknown field `secrit`, expected one of `description`, `required`, \
         `default`, `secret`"
    );
}

#[test]
fn private_false_route() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[[trigger.http]]\nroute = {{ private = false }}\ncomponent = \"web\"\n\
             [component.web]\nsource = \"web.wasm\"\n"
        )),
        "spin.toml:5:9: [[trigger.http]] #1: route must be a string pattern or \
         '{ private = true }', not '{ private = false }'"
    );
}

#[test]
fn malformed_route() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[[trigger.http]]\nroute = 3\ncomponent = \"web\"\n"
        )),
        "spin.toml:5:9: route must be a string pattern or '{ private = true }'"
    );
}

#[test]
fn unsupported_source_url() {
    let error = parse_err(&format!(
        "{HEAD}[[trigger.http]]\nroute = \"/\"\ncomponent = \"web\"\n[component.web]\n\
         source = {{ url = \"https://example.com/web.wasm\", digest = \"sha256:abc\" }}\n"
    ));
    assert!(matches!(error, ManifestError::Unsupported { .. }));
    assert_eq!(
        error.to_string(),
        "spin.toml:8:10: component `web`: field `source` with a URL (`{ url, digest }`) is not \
         supported by kiosk-host; download the Wasm file and give its path"
    );
}

#[test]
fn unsupported_source_registry() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[[trigger.http]]\nroute = \"/\"\ncomponent = \"web\"\n[component.web]\n\
             source = {{ package = \"a:b\", version = \"1.0.0\" }}\n"
        )),
        "spin.toml:8:10: component `web`: field `source` with a registry package \
         (`{ registry, package, version }`) is not supported by kiosk-host; download the Wasm \
         file and give its path"
    );
}

#[test]
fn malformed_source() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[[trigger.http]]\nroute = \"/\"\ncomponent = \"web\"\n[component.web]\n\
             source = {{ url = \"https://example.com/web.wasm\" }}\n"
        )),
        "spin.toml:8:10: `source` must be a path string, `{ url = \"...\", digest = \"...\" }` \
         or `{ registry = \"...\", package = \"...\", version = \"...\" }`: missing field `digest`"
    );
}

#[test]
fn unsupported_sqlite_databases() {
    assert_eq!(
        error_text(&format!("{HEAD}{WEB}sqlite_databases = [\"default\"]\n")),
        "spin.toml:9:20: component `web`: field `sqlite_databases` is not supported by kiosk-host"
    );
}

#[test]
fn unsupported_component_fields_are_all_reported() {
    let error = parse_err(&format!(
        "{HEAD}{WEB}ai_models = [\"llama2-chat\"]\nallowed_http_hosts = [\"example.com\"]\n\
         dependencies = {{ \"a:b/c\" = \"1.0.0\" }}\n[component.web.profile.debug]\n\
         source = \"debug.wasm\"\n"
    ));
    let ManifestError::Multiple(errors) = &error else {
        panic!("expected several errors: {error:?}");
    };
    assert_eq!(errors.len(), 4);
    assert_eq!(error.location().map(|l| l.line), Some(9));
    assert_eq!(
        error.to_string(),
        "spin.toml:9:13: component `web`: field `ai_models` is not supported by kiosk-host\n\
         spin.toml:10:22: component `web`: the deprecated field `allowed_http_hosts` is not \
         supported by kiosk-host; use `allowed_outbound_hosts` instead (e.g. \"https://example.com\")\n\
         spin.toml:11:16: component `web`: field `dependencies` is not supported by kiosk-host\n\
         spin.toml:12:16: component `web`: field `profile` is not supported by kiosk-host"
    );
}

#[test]
fn unsupported_static_response() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[[trigger.http]]\nroute = \"/\"\nstatic_response = {{ body = \"hi\" }}\n"
        )),
        "spin.toml:6:19: [[trigger.http]] #1: field `static_response` is not supported by \
         kiosk-host; route to a component instead"
    );
}

#[test]
fn missing_component_in_trigger() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[[trigger.http]]\nid = \"t\"\nroute = \"/\"\n"
        )),
        "spin.toml:4:1: trigger `t`: missing field `component`"
    );
}

#[test]
fn unsupported_inline_component() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[[trigger.http]]\nroute = \"/\"\ncomponent = {{ source = \"a.wasm\" }}\n"
        )),
        "spin.toml:6:13: [[trigger.http]] #1: an inline component table is not supported by \
         kiosk-host; declare it as [component.<id>] and give its ID"
    );
}

#[test]
fn unsupported_wagi_executor() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[[trigger.http]]\nroute = \"/\"\ncomponent = \"web\"\n\
             executor = {{ type = \"wagi\", argv = \"x\" }}\n[component.web]\nsource = \"w.wasm\"\n"
        )),
        "spin.toml:7:12: [[trigger.http]] #1: the `wagi` executor is not supported by kiosk-host"
    );
}

#[test]
fn spin_executor_alias_is_accepted() {
    let manifest = parse_ok(&format!("{HEAD}{WEB}").replace(
        "component = \"web\"\n",
        "component = \"web\"\nexecutor = { type = \"spin\" }\n",
    ));
    assert_eq!(manifest.http_triggers.len(), 1);
}

#[test]
fn unsupported_trigger_type() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}{WEB}[[trigger.redis]]\nchannel = \"x\"\ncomponent = \"web\"\n"
        )),
        "spin.toml:9:11: trigger type `redis` is not supported by kiosk-host"
    );
}

#[test]
fn unknown_trigger_key() {
    assert_eq!(
        error_text(&format!("{HEAD}{WEB}").replace("route", "path")),
        "spin.toml:5:1: unknown field `path`, expected one of `id`, `component`, \
         `static_response`, `route`, `executor`"
    );
}

#[test]
fn duplicate_trigger_ids() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[[trigger.http]]\nid = \"a\"\nroute = \"/1\"\ncomponent = \"web\"\n\
             [[trigger.http]]\nid = \"a\"\nroute = \"/2\"\ncomponent = \"web\"\n\
             [component.web]\nsource = \"w.wasm\"\n"
        )),
        "spin.toml:9:6: duplicate trigger id `a`"
    );
}

#[test]
fn trigger_base_other_than_root() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[application.trigger.http]\nbase = \"/api\"\n{WEB}"
        )),
        "spin.toml:5:8: the deprecated trigger 'base' field is not supported (base = \"/api\"); \
         prepend the base to each [[trigger.http]] route instead"
    );
    assert_eq!(
        error_text(&format!(
            "{HEAD}[application.trigger.http]\nbase = \"/\"\nother = 1\n{WEB}"
        )),
        "spin.toml:6:1: unknown field `other`, expected `base`"
    );
}

#[test]
fn template_naming_unknown_variable() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}[variables]\nhost = {{ default = \"h\" }}\n{WEB}\
             [component.web.variables]\nurl = \"https://{{{{ host }}}}/{{{{ nope }}}}\"\n"
        )),
        "spin.toml:12:7: component `web`: variable `url`: invalid variable template: \
         unknown variable \"nope\""
    );
}

#[test]
fn outbound_host_template_naming_unknown_variable() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}{WEB}allowed_outbound_hosts = [\"https://{{{{ db_host }}}}\"]\n"
        )),
        "spin.toml:9:27: component `web`: allowed_outbound_hosts entry \"https://{{ db_host }}\": \
         invalid variable template: unknown variable \"db_host\""
    );
}

#[test]
fn unmatched_template_braces() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}{WEB}allowed_outbound_hosts = [\"https://{{{{ host\"]\n"
        )),
        "spin.toml:9:27: component `web`: allowed_outbound_hosts entry \"https://{{ host\": \
         invalid variable template: unmatched '{{' in template"
    );
}

#[test]
fn bad_key_value_store_label() {
    assert_eq!(
        error_text(&format!("{HEAD}{WEB}key_value_stores = [\"my store\"]\n")),
        "spin.toml:9:21: component `web`: invalid key_value_stores label \"my store\": \
         expected kebab-case or snake_case"
    );
}

#[test]
fn bad_files_entries() {
    assert_eq!(
        error_text(&format!(
            "{HEAD}{WEB}files = [\"static\", {{ src = \"a\", destination = \"/\" }}]\n"
        )),
        "spin.toml:9:20: component `web`: a `files` entry must be a glob or path string, or \
         `{ source = \"...\", destination = \"...\" }`: unknown field `src`, expected `source`, \
         `destination`"
    );
    assert_eq!(
        error_text(&format!("{HEAD}{WEB}files = [\"static/..\"]\n")),
        "spin.toml:9:10: component `web`: `files` entry \"static/..\": a file pattern can't end \
         in a parent directory path (..); to include a directory, use the \
         `{ source, destination }` form or a glob pattern ending in **/*"
    );
}

#[test]
fn io_error_has_no_location() {
    let error = load(Path::new("/nonexistent/kiosk/spin.toml")).unwrap_err();
    assert!(matches!(error, ManifestError::Io { .. }));
    assert!(error.location().is_none());
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/kiosk/spin.toml: cannot read manifest: "),
        "{error}"
    );
}

/// A scratch application directory, removed on drop.
struct TempApp {
    base: PathBuf,
}

impl TempApp {
    /// `<tmp>/kiosk-manifest-<pid>-<name>/{app,outside}` with some files.
    fn new(name: &str) -> Self {
        let base =
            std::env::temp_dir().join(format!("kiosk-manifest-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let app = Self { base };
        for file in [
            "app/static/index.html",
            "app/static/css/site.css",
            "app/static/secret.txt",
            "app/assets/logo.png",
            "app/assets/sub/notes.txt",
            "app/config/app.json",
            "outside/data.txt",
        ] {
            app.write(file, file);
        }
        app
    }

    fn root(&self) -> PathBuf {
        self.base.join("app")
    }

    fn write(&self, relative: &str, contents: &str) {
        let path = self.base.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    /// Writes a manifest with one component `web` with the given extra lines,
    /// loads it and resolves `web`'s files.
    fn resolve(&self, component_lines: &str) -> Result<Vec<(PathBuf, PathBuf)>, ManifestError> {
        self.write("app/spin.toml", &format!("{HEAD}{WEB}{component_lines}"));
        let manifest = load(&self.root().join("spin.toml")).unwrap();
        resolve_files(&manifest, &manifest.components["web"])
    }

    /// Like [`TempApp::resolve`], as sorted (app-root-relative host, guest) strings.
    fn resolve_relative(&self, component_lines: &str) -> Vec<(String, String)> {
        let root = fs::canonicalize(self.root()).unwrap();
        let mut pairs: Vec<(String, String)> = self
            .resolve(component_lines)
            .unwrap()
            .into_iter()
            .map(|(host, guest)| {
                let host = host.strip_prefix(&root).unwrap().display().to_string();
                (host, guest.display().to_string())
            })
            .collect();
        pairs.sort();
        pairs
    }
}

impl Drop for TempApp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(host, guest)| (host.to_string(), guest.to_string()))
        .collect()
}

#[test]
fn resolve_glob() {
    let app = TempApp::new("glob");
    assert_eq!(
        app.resolve_relative("files = [\"static/**/*.html\", \"config/*\"]\n"),
        pairs(&[
            ("config/app.json", "/config/app.json"),
            ("static/index.html", "/static/index.html"),
        ])
    );
}

#[test]
fn resolve_plain_directory_and_file_paths() {
    let app = TempApp::new("plain");
    assert_eq!(
        app.resolve_relative("files = [\"./static\", \"assets/logo.png\"]\n"),
        pairs(&[
            ("assets/logo.png", "/assets/logo.png"),
            ("static/css/site.css", "/static/css/site.css"),
            ("static/index.html", "/static/index.html"),
            ("static/secret.txt", "/static/secret.txt"),
        ])
    );
}

#[test]
fn resolve_directory_mapping() {
    let app = TempApp::new("dir-mapping");
    assert_eq!(
        app.resolve_relative("files = [{ source = \"assets\", destination = \"/public\" }]\n"),
        pairs(&[
            ("assets/logo.png", "/public/logo.png"),
            ("assets/sub/notes.txt", "/public/sub/notes.txt"),
        ])
    );
}

#[test]
fn resolve_file_mapping() {
    let app = TempApp::new("file-mapping");
    let resolved = app
        .resolve("files = [{ source = \"config/app.json\", destination = \"/etc/kiosk.json\" }]\n")
        .unwrap();
    let host = fs::canonicalize(app.root().join("config/app.json")).unwrap();
    assert_eq!(resolved, [(host, PathBuf::from("/etc/kiosk.json"))]);
}

#[test]
fn resolve_file_mapping_to_a_directory_name_is_rejected() {
    let app = TempApp::new("file-mapping-dir");
    let error = app
        .resolve("files = [{ source = \"config/app.json\", destination = \"/etc/\" }]\n")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:7:1: component `web`: `files` entry {{ source = \"config/app.json\", \
             destination = \"/etc/\" }}: \"/etc/\" is not a valid destination file name for a file",
            app.root().join("spin.toml").display()
        )
    );
}

#[test]
fn resolve_rejects_sources_outside_app_root() {
    let app = TempApp::new("escape");
    let outside = fs::canonicalize(app.base.join("outside")).unwrap();
    let root = fs::canonicalize(app.root()).unwrap();
    let manifest = app.root().join("spin.toml");

    let error = app
        .resolve("files = [{ source = \"../outside\", destination = \"/o\" }]\n")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:7:1: component `web`: `files` entry {{ source = \"../outside\", destination = \
             \"/o\" }}: {} is outside the application directory {}; files must be within the \
             application directory",
            manifest.display(),
            app.root().join("../outside").display(),
            root.display()
        )
    );
    assert_eq!(error.location().map(|l| l.line), Some(7));

    let error = app.resolve("files = [\"../outside/*.txt\"]\n").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is outside the application directory"),
        "{error}"
    );

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&outside, app.root().join("link")).unwrap();
        let error = app.resolve("files = [\"link/**/*\"]\n").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is outside the application directory"),
            "{error}"
        );
    }
}

#[test]
fn resolve_applies_exclude_files() {
    let app = TempApp::new("exclude");
    assert_eq!(
        app.resolve_relative(
            "files = [\"static/**/*\", { source = \"assets\", destination = \"/a\" }]\n\
             exclude_files = [\"static/secret.txt\", \"assets/sub/*\"]\n"
        ),
        pairs(&[
            ("assets/logo.png", "/a/logo.png"),
            ("static/css/site.css", "/static/css/site.css"),
            ("static/index.html", "/static/index.html"),
        ])
    );
}

#[test]
fn resolve_missing_path_names_component_and_pattern() {
    let app = TempApp::new("missing");
    let error = app.resolve("files = [\"nothere.txt\"]\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:7:1: component `web`: `files` entry \"nothere.txt\": it does not exist and \
             doesn't appear to be a glob pattern",
            app.root().join("spin.toml").display()
        )
    );
    assert!(
        app.resolve("files = [\"nothing/*.png\"]\n")
            .unwrap()
            .is_empty()
    );
}
