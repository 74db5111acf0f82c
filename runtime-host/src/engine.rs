//! The wasmtime engine: its configuration (pooling allocator, epoch
//! interruption), the one epoch ticker, and the on-disk cache of compiled
//! components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, PoolingAllocationConfig, ProfilingStrategy};

use crate::config::ServerSettings;
use crate::limits::EPOCH_TICK;

/// Engine settings chosen at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    /// Instances that may run at once (pool size and instance slots).
    pub max_instances: u32,
    /// Largest linear memory of one instance, in bytes.
    pub max_memory_bytes: u64,
    /// Use the pooling allocator (fast instantiation); off only for debugging.
    pub pooling: bool,
}

impl From<&ServerSettings> for EngineSettings {
    fn from(server: &ServerSettings) -> Self {
        Self {
            max_instances: server.max_instances,
            max_memory_bytes: server.max_instance_memory,
            pooling: server.pooling,
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self::from(&ServerSettings::default())
    }
}

/// Builds the engine and starts its epoch ticker.
pub fn build_engine(settings: &EngineSettings) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Per-request instances are short-lived: keep freed async stacks and
    // memory resident instead of returning them to the kernel each time
    // (TLB shootdowns are expensive on VMs), and reuse instead of zeroing.
    config.async_stack_zeroing(false);
    if settings.pooling {
        config.allocation_strategy(pooling_config(settings));
    }
    config.profiler(profiler_from_env()?);
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("configuring the wasmtime engine")?;
    start_epoch_ticker(&engine);
    Ok(engine)
}

/// `KIOSK_PROFILE=perfmap` (or `jitdump`) makes guest code visible to
/// `perf` by name, as `wasmtime --profile` does; unset, no profiler.
fn profiler_from_env() -> anyhow::Result<ProfilingStrategy> {
    match std::env::var("KIOSK_PROFILE").as_deref() {
        Err(_) | Ok("" | "none") => Ok(ProfilingStrategy::None),
        Ok("perfmap") => Ok(ProfilingStrategy::PerfMap),
        Ok("jitdump") => Ok(ProfilingStrategy::JitDump),
        Ok(other) => {
            anyhow::bail!("KIOSK_PROFILE={other:?} is not a profiler; use perfmap, jitdump or none")
        }
    }
}

fn pooling_config(settings: &EngineSettings) -> PoolingAllocationConfig {
    let n = settings.max_instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        // A Rust wasip2 component has a handful of core instances (the
        // program, shims, fix-ups), one or two memories and a few tables.
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(usize::try_from(settings.max_memory_bytes).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(16 * 1024 * 1024)
        .table_keep_resident(1024 * 1024)
        .async_stack_keep_resident(2 * 1024 * 1024)
        .decommit_batch_size(128)
        .pagemap_scan(Enabled::Auto);
    pool
}

/// One thread advances the epoch for the whole engine; stores turn ticks into
/// yields and deadlines (see `limits::install_deadline`).
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Compiled components kept on disk, keyed by the wasm's hash and the
/// engine's settings, so a restart does not compile again.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// Whether a component came from the cache or was compiled now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded a compiled artifact from disk.
    Hit,
    /// Compiled now (and stored for next time).
    Compiled,
}

impl CompileCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory holding the artifacts.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads `wasm` compiled for `engine`, from the cache when possible.
    pub fn load(&self, engine: &Engine, wasm: &Path) -> anyhow::Result<(Component, CacheOutcome)> {
        let bytes =
            std::fs::read(wasm).with_context(|| format!("reading component {}", wasm.display()))?;
        let artifact = self
            .dir
            .join(format!("{}.cwasm", cache_key(engine, &bytes)));
        if artifact.exists() {
            // SAFETY: the artifact was written by `Engine::precompile_component`
            // of an engine with the same compatibility hash (it is in the file
            // name), and only this process family writes this directory.
            match unsafe { Component::deserialize_file(engine, &artifact) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(
                    artifact = %artifact.display(),
                    error = %e,
                    "ignoring unusable compiled artifact; compiling again"
                ),
            }
        }
        let compiled = engine
            .precompile_component(&bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling component {}", wasm.display()))?;
        if let Err(e) = self.store(&artifact, &compiled) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the compile cache");
        }
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled) }
            .map_err(anyhow::Error::from)
            .with_context(|| format!("loading compiled component {}", wasm.display()))?;
        Ok((component, CacheOutcome::Compiled))
    }

    fn store(&self, artifact: &Path, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, compiled)?;
        std::fs::rename(&tmp, artifact)
    }
}

fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    let mut digest = Sha256::new();
    digest.update(wasm);
    digest.update(settings.finish().to_le_bytes());
    digest.update(env!("CARGO_PKG_VERSION").as_bytes());
    hex::encode(digest.finalize())
}
