//! The loaded application: compiled components, their grants and the route
//! table, behind one swappable handle so a new version can replace it whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use bytes::Bytes;
use kiosk_manifest::{ComponentDef, Manifest, RouteSpec};
use kiosk_routes::RouteTable;
use wasmtime::Engine;
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::capabilities::outbound::OutboundPolicy;
use crate::capabilities::{Grants, HostState};
use crate::config::{ComponentSettings, ServerSettings};
use crate::engine::{CacheOutcome, CompileCache};
use crate::limits::InstanceSlots;
use crate::policy::Destinations;
use crate::variables::AppVariables;

/// One component ready to serve: pre-instantiated once, instantiated per request.
pub struct AppComponent {
    /// The component id from the manifest.
    pub id: String,
    /// Pre-instantiated component (imports resolved, types checked).
    pub pre: ProxyPre<HostState>,
    /// What the manifest grants it.
    pub grants: Arc<Grants>,
    /// Its own instance slots (a bulkhead), when it has a limit below the
    /// host's: taken before one of the host's slots.
    pub slots: Option<InstanceSlots>,
    /// The largest request body it takes.
    pub max_body_bytes: u64,
}

/// Everything a request needs from the application.
pub struct LoadedApp {
    /// `[application] name`.
    pub name: String,
    /// `[application] version`, if any.
    pub version: Option<String>,
    /// Route table; targets index `components`.
    pub routes: RouteTable<usize>,
    /// Components that have a public or private trigger.
    pub components: Vec<AppComponent>,
    /// Body of `/.well-known/spin/info`, prepared once.
    pub info_body: Bytes,
    /// Staged `files` of every component; removed when the app is dropped.
    _assets: tempfile::TempDir,
}

/// Options that shape loading beyond the manifest.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// `-e KEY=VALUE` values, set for every component (override the manifest).
    pub env_overrides: Vec<(String, String)>,
    /// Where staged asset directories are created.
    pub state_dir: PathBuf,
    /// Open key-value stores by label.
    pub kv_stores: BTreeMap<String, Arc<dyn kiosk_kv::KvBackend>>,
    /// Resolved application variables.
    pub variables: AppVariables,
    /// This host's listener (`host:port`), the target of `self` requests.
    pub self_authority: Option<http::uri::Authority>,
    /// The outbound policy of every destination.
    pub destinations: Option<Arc<Destinations>>,
    /// kiosk-host's settings per component (manifest tool tables, then the
    /// host configuration).
    pub components: BTreeMap<String, ComponentSettings>,
    /// The host-wide limits the component limits are resolved against.
    pub server: ServerSettings,
}

/// The current application, swappable while requests are in flight: a
/// request keeps the version it started with until it ends.
pub struct AppHandle(ArcSwap<LoadedApp>);

impl AppHandle {
    /// Wraps the first loaded version.
    pub fn new(app: LoadedApp) -> Self {
        Self(ArcSwap::from_pointee(app))
    }

    /// The version new requests use.
    pub fn current(&self) -> Arc<LoadedApp> {
        self.0.load_full()
    }

    /// Replaces the version for new requests (those in flight finish on
    /// theirs).
    pub fn replace(&self, app: Arc<LoadedApp>) {
        self.0.store(app);
    }
}

/// Loads, checks and compiles every component of `manifest`.
pub fn load(
    manifest: &Manifest,
    engine: &Engine,
    linker: &Linker<HostState>,
    cache: &CompileCache,
    options: &LoadOptions,
) -> anyhow::Result<LoadedApp> {
    for warning in &manifest.warnings {
        tracing::warn!("{warning}");
    }
    std::fs::create_dir_all(&options.state_dir)
        .with_context(|| format!("creating state dir {}", options.state_dir.display()))?;
    let assets = tempfile::Builder::new()
        .prefix("assets-")
        .tempdir_in(&options.state_dir)
        .context("creating the assets directory")?;

    let mut components = Vec::new();
    let mut entries = Vec::new();
    for trigger in &manifest.http_triggers {
        let index = match components
            .iter()
            .position(|c: &AppComponent| c.id == trigger.component)
        {
            Some(index) => index,
            None => {
                let def = manifest
                    .components
                    .get(&trigger.component)
                    .with_context(|| format!("unknown component `{}`", trigger.component))?;
                let component = prepare_component(
                    manifest,
                    def,
                    engine,
                    linker,
                    cache,
                    options,
                    assets.path(),
                )?;
                components.push(component);
                components.len() - 1
            }
        };
        if let RouteSpec::Path(route) = &trigger.route {
            entries.push((route.clone(), index));
        }
    }
    let routes = RouteTable::build(entries).context("building the route table")?;
    for warning in routes.warnings() {
        tracing::warn!("{warning}");
    }
    for dup in routes.duplicates() {
        tracing::warn!(
            route = %dup.route,
            "duplicate route: component `{}` is shadowed by `{}` and will never be used",
            components[dup.shadowed].id,
            components[dup.winner].id
        );
    }
    let info_body = info_json(
        &manifest.application.name,
        manifest.application.version.as_deref(),
    );
    Ok(LoadedApp {
        name: manifest.application.name.clone(),
        version: manifest.application.version.clone(),
        routes,
        components,
        info_body,
        _assets: assets,
    })
}

fn prepare_component(
    manifest: &Manifest,
    def: &ComponentDef,
    engine: &Engine,
    linker: &Linker<HostState>,
    cache: &CompileCache,
    options: &LoadOptions,
    assets_root: &Path,
) -> anyhow::Result<AppComponent> {
    if !def.source.exists() {
        bail!(
            "component `{}`: source {} does not exist (build it, or run with --build)",
            def.id,
            def.source.display()
        );
    }
    let started = std::time::Instant::now();
    let (component, outcome) = cache
        .load(engine, &def.source)
        .with_context(|| format!("component `{}`", def.id))?;
    tracing::info!(
        component = %def.id,
        cache = %match outcome { CacheOutcome::Hit => "hit", CacheOutcome::Compiled => "compiled" },
        ms = started.elapsed().as_millis() as u64,
        "component ready"
    );
    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "component `{}` imports something the host does not provide",
                def.id
            )
        })?;
    let pre = ProxyPre::new(instance_pre)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "component `{}` does not export wasi:http/incoming-handler@0.2",
                def.id
            )
        })?;

    let files_root = stage_files(manifest, def, assets_root)?;
    let mut environment: Vec<(String, String)> = def
        .environment
        .iter()
        .filter(|(k, _)| !options.env_overrides.iter().any(|(o, _)| o == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    environment.extend(options.env_overrides.iter().cloned());
    let at = format!("{}:{}", manifest.path.display(), def.location.line);
    let kv_stores = def
        .key_value_stores
        .iter()
        .map(|label| match options.kv_stores.get(label) {
            Some(store) => Ok((label.clone(), store.clone())),
            None => Err(anyhow::anyhow!(
                "{at}: component `{}`: key-value store `{label}` is not open",
                def.id
            )),
        })
        .collect::<anyhow::Result<_>>()?;
    let variables = options.variables.for_component(def)?;
    let allowed =
        kiosk_outbound::AllowedHosts::parse_templated(&def.allowed_outbound_hosts, |entry| {
            let template = kiosk_manifest::Template::parse(entry).map_err(|e| e.to_string())?;
            options
                .variables
                .render(&template)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            anyhow::anyhow!("{at}: component `{}`: allowed_outbound_hosts: {e}", def.id)
        })?;
    let settings = options
        .components
        .get(&def.id)
        .cloned()
        .unwrap_or_default()
        .resolve(!def.allowed_outbound_hosts.is_empty(), &options.server);
    let slots = (settings.max_instances < options.server.max_instances
        || settings.queue_timeout != options.server.queue_timeout)
        .then(|| {
            InstanceSlots::new(
                settings.max_instances as usize,
                settings.queue_depth,
                settings.queue_timeout,
            )
        });
    tracing::debug!(component = %def.id, ?settings, "component limits");
    let max_body_bytes = settings.max_body_bytes;
    let destinations = options
        .destinations
        .clone()
        .unwrap_or_else(|| Destinations::new(Default::default()));
    let outbound = OutboundPolicy::new(
        def.id.clone(),
        allowed,
        options.self_authority.clone(),
        destinations,
        settings.outbound_cache,
    );
    Ok(AppComponent {
        id: def.id.clone(),
        pre,
        grants: Arc::new(Grants {
            component: def.id.clone(),
            environment,
            files_root,
            kv_stores,
            variables,
            outbound,
        }),
        slots,
        max_body_bytes,
    })
}

/// Copies the component's `files` into its own directory, mounted read-only
/// at guest `/`. Returns `None` when the manifest grants no files.
fn stage_files(
    manifest: &Manifest,
    def: &ComponentDef,
    assets_root: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    if def.files.is_empty() {
        return Ok(None);
    }
    let root = assets_root.join(&def.id);
    std::fs::create_dir_all(&root)?;
    for (host, guest) in kiosk_manifest::resolve_files(manifest, def)? {
        let relative = guest.strip_prefix("/").unwrap_or(&guest);
        let target = root.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&host, &target)
            .with_context(|| format!("component `{}`: staging file {}", def.id, host.display()))?;
    }
    Ok(Some(root))
}

fn info_json(name: &str, version: Option<&str>) -> Bytes {
    let mut info = serde_json::Map::new();
    info.insert("name".into(), name.into());
    if let Some(version) = version.filter(|v| !v.is_empty()) {
        info.insert("version".into(), version.into());
    }
    Bytes::from(serde_json::to_string_pretty(&info).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_pretty_json_without_an_empty_version() {
        assert_eq!(
            info_json("kiosk-api", Some("1.2.0")),
            "{\n  \"name\": \"kiosk-api\",\n  \"version\": \"1.2.0\"\n}"
        );
        assert_eq!(info_json("x", Some("")), "{\n  \"name\": \"x\"\n}");
        assert_eq!(info_json("x", None), "{\n  \"name\": \"x\"\n}");
    }
}
