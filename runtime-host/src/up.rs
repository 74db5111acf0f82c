//! Start-up, top to bottom: manifest → build → engine → compile → listen →
//! serve → drain.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use kiosk_manifest::Manifest;

use crate::app::{self, AppHandle, LoadOptions, LoadedApp};
use crate::capabilities::build_linker;
use crate::capabilities::outbound::OutboundTimeouts;
use crate::cli::{AppArgs, UpArgs};
use crate::dispatch::Dispatcher;
use crate::engine::{CompileCache, EngineSettings, build_engine};
use crate::limits::{InstanceSlots, RequestLimits};
use crate::runtime_config::RuntimeConfig;
use crate::variables::{self, AppVariables};
use crate::{guest_build, kv_stores, runtime_config, server};

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

fn state_dir(args: &AppArgs, manifest: &Manifest) -> PathBuf {
    args.state_dir
        .clone()
        .unwrap_or_else(|| manifest.app_root.join(".spin"))
}

/// Loads and compiles the application (what `check` validates and `up`
/// serves): runtime config, variables, key-value stores, components.
pub async fn prepare(
    args: &AppArgs,
    manifest: &Manifest,
    settings: &EngineSettings,
    env_overrides: Vec<(String, String)>,
    self_authority: Option<http::uri::Authority>,
    outbound_timeouts: OutboundTimeouts,
) -> anyhow::Result<LoadedApp> {
    let runtime_config = match &args.runtime_config_file {
        Some(path) => runtime_config::load(path)?,
        None => RuntimeConfig::default(),
    };
    let dotenv = variables::read_dotenv(&manifest.app_root)?;
    let variables = AppVariables::resolve(manifest, |key| std::env::var(key).ok(), &dotenv)?;
    let state_dir = state_dir(args, manifest);
    let kv_stores = kv_stores::open_stores(manifest, &runtime_config, &state_dir).await?;
    let options = LoadOptions {
        env_overrides,
        state_dir: state_dir.clone(),
        kv_stores,
        variables,
        self_authority,
        outbound_timeouts,
    };
    let manifest = manifest.clone();
    let settings = settings.clone();
    // Compiling is CPU-bound: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        let engine = build_engine(&settings)?;
        let linker = build_linker(&engine).map_err(anyhow::Error::from)?;
        let cache = CompileCache::new(state_dir.join("compiled"));
        app::load(&manifest, &engine, &linker, &cache, &options)
    })
    .await
    .context("load task")?
}

/// `kiosk-host check`.
pub async fn check(args: &AppArgs) -> anyhow::Result<()> {
    let manifest = read_manifest(args)?;
    // The same engine settings as `up`, so the compiled cache serves both.
    let app = prepare(
        args,
        &manifest,
        &EngineSettings::default(),
        Vec::new(),
        None,
        OutboundTimeouts::default(),
    )
    .await?;
    println!(
        "{}: ok ({} components, {} routes)",
        manifest.path.display(),
        app.components.len(),
        manifest.http_triggers.len()
    );
    Ok(())
}

/// `kiosk-host up`. Returns when drained after SIGTERM/SIGINT.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let manifest = read_manifest(&args.app)?;
    if args.build {
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || guest_build::build_components(&manifest))
            .await
            .context("build task")??;
    }
    let settings = EngineSettings {
        max_instances: args.max_instances,
        max_memory_bytes: args.max_instance_memory,
        pooling: !args.disable_pooling,
    };
    // Bind first: `self` requests need the real address (port 0 picks one).
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let self_authority = local.to_string().parse().ok();
    let outbound_timeouts = OutboundTimeouts {
        connect: args.outbound_connect_timeout,
        first_byte: args.outbound_timeout,
        between_bytes: args.outbound_timeout,
    };
    let loaded = prepare(
        &args.app,
        &manifest,
        &settings,
        args.env.clone(),
        self_authority,
        outbound_timeouts,
    )
    .await?;
    announce(&manifest, &local);

    let limits = RequestLimits {
        max_memory_bytes: args.max_instance_memory,
        deadline: args.request_timeout,
        max_body_bytes: args.max_body_bytes,
    };
    let slots = InstanceSlots::new(
        args.max_instances as usize,
        args.queue_depth,
        args.queue_timeout,
    );
    let dispatcher = Arc::new(Dispatcher::new(
        Arc::new(AppHandle::new(loaded)),
        slots,
        limits,
        false,
    ));
    let cut = server::serve(
        listener,
        dispatcher,
        server::termination_signal(),
        args.drain_timeout,
    )
    .await;
    if cut > 0 {
        anyhow::bail!("shut down with requests still in flight after the drain timeout");
    }
    Ok(())
}

fn announce(manifest: &Manifest, local: &std::net::SocketAddr) {
    // Spin prints these on stdout; scripts and tests read the address here.
    println!("Serving http://{local}");
    println!("Available Routes:");
    for trigger in &manifest.http_triggers {
        if let kiosk_manifest::RouteSpec::Path(route) = &trigger.route {
            println!("  {}: http://{local}{route}", trigger.component);
        }
    }
    tracing::info!(manifest = %manifest.path.display(), address = %local, "serving");
}
