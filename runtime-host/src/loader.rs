//! Loading the application, at start and again at each reload: the
//! manifest, the runtime config, the variables, the key-value stores and
//! the compiled components.
//!
//! What outlives any one version of the app is built once, here: the
//! engine (and so its one epoch ticker), the linker, the compile cache and
//! the key-value stores. A reload that keeps a store's configuration gets
//! the very store in force (an SQLite file is never opened twice, a Redis
//! fence never runs twice); one that changes it is refused, since only a
//! restart or a handover can let go of a store safely.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use kiosk_manifest::Manifest;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::app::{self, LoadOptions, LoadedApp};
use crate::capabilities::{HostState, build_linker};
use crate::cli::AppArgs;
use crate::config::{self, ComponentSettings, HostConfig};
use crate::engine::{CompileCache, EngineSettings, build_engine};
use crate::kv_stores::OpenStores;
use crate::policy::Destinations;
use crate::runtime_config::{self, RuntimeConfig};
use crate::variables::{self, AppVariables};

/// Reads the manifest named by `-f` (a file, or a directory with spin.toml).
pub fn read_manifest(args: &AppArgs) -> anyhow::Result<Manifest> {
    let path = if args.from.is_dir() {
        args.from.join("spin.toml")
    } else {
        args.from.clone()
    };
    // The manifest's own error names file:line:column; add nothing in front.
    kiosk_manifest::load(&path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Loads versions of one application for the life of a host.
pub struct Loader {
    args: AppArgs,
    env_overrides: Vec<(String, String)>,
    self_authority: Option<http::uri::Authority>,
    destinations: Arc<Destinations>,
    engine: Engine,
    linker: Linker<HostState>,
    stores: OpenStores,
}

impl Loader {
    /// Builds the engine (from `[server]`, fixed for the host's life) and
    /// the linker. `self_authority` is the target of `self` requests;
    /// `destinations` the outbound policies every version shares.
    pub async fn new(
        args: &AppArgs,
        config: &HostConfig,
        env_overrides: Vec<(String, String)>,
        self_authority: Option<http::uri::Authority>,
        destinations: Arc<Destinations>,
    ) -> anyhow::Result<Arc<Self>> {
        let settings = EngineSettings::from(&config.server);
        let (engine, linker) = tokio::task::spawn_blocking(move || {
            let engine = build_engine(&settings)?;
            let linker = build_linker(&engine).map_err(anyhow::Error::from)?;
            anyhow::Ok((engine, linker))
        })
        .await
        .context("engine task")??;
        Ok(Arc::new(Self {
            args: args.clone(),
            env_overrides,
            self_authority,
            destinations,
            engine,
            linker,
            stores: OpenStores::default(),
        }))
    }

    /// Loads and compiles `manifest` as `config` says (what `check`
    /// validates and `up` serves): runtime config, variables, key-value
    /// stores, components. Nothing in force changes; on error nothing is
    /// left behind but stores opened for the first time.
    pub async fn load(
        self: &Arc<Self>,
        manifest: &Manifest,
        config: &HostConfig,
    ) -> anyhow::Result<LoadedApp> {
        let args = &self.args;
        let runtime_config = match &args.runtime_config_file {
            Some(path) => runtime_config::load(path)?,
            None => RuntimeConfig::default(),
        };
        let components = component_settings(manifest, config, args.config.as_deref())?;
        let dotenv = variables::read_dotenv(&manifest.app_root)?;
        let fixed = config.app_variables(|name| manifest.variables.contains_key(name));
        let variables =
            AppVariables::resolve(manifest, |key| std::env::var(key).ok(), &dotenv, &fixed)?;
        let state_dir = state_dir(args, manifest);
        let kv_stores = self
            .stores
            .open(manifest, &runtime_config, &state_dir)
            .await?;
        let options = LoadOptions {
            env_overrides: self.env_overrides.clone(),
            state_dir: state_dir.clone(),
            kv_stores,
            variables,
            self_authority: self.self_authority.clone(),
            destinations: Some(self.destinations.clone()),
            components,
            server: config.server.clone(),
        };
        let manifest = manifest.clone();
        let this = self.clone();
        // Compiling is CPU-bound: keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            let cache = CompileCache::new(state_dir.join("compiled"));
            app::load(&manifest, &this.engine, &this.linker, &cache, &options)
        })
        .await
        .context("load task")?
    }
}

fn state_dir(args: &AppArgs, manifest: &Manifest) -> PathBuf {
    args.state_dir
        .clone()
        .unwrap_or_else(|| manifest.app_root.join(".spin"))
}

/// kiosk-host's settings per component: the manifest's
/// `[component.ID.tool.kiosk-host]` tables, then the host configuration's
/// `[component.ID]` over them. A host configuration naming a component the
/// manifest does not have is refused (a typo would silently do nothing).
fn component_settings(
    manifest: &Manifest,
    config: &HostConfig,
    config_path: Option<&std::path::Path>,
) -> anyhow::Result<BTreeMap<String, ComponentSettings>> {
    let text = std::fs::read_to_string(&manifest.path)
        .with_context(|| format!("reading {}", manifest.path.display()))?;
    let mut settings = config::manifest_component_settings(&text, &manifest.path)?;
    for (id, over) in &config.component {
        if !manifest.components.contains_key(id) {
            let at = match config_path {
                Some(path) => {
                    let text = std::fs::read_to_string(path).unwrap_or_default();
                    format!(
                        "{}:{}",
                        path.display(),
                        config::line_of_component(&text, id)
                    )
                }
                None => "host configuration".to_string(),
            };
            anyhow::bail!(
                "{at}: [component.{id}]: {} has no component `{id}`",
                manifest.path.display()
            );
        }
        let merged = settings
            .get(id)
            .cloned()
            .unwrap_or_default()
            .overridden_by(over);
        settings.insert(id.clone(), merged);
    }
    Ok(settings)
}
