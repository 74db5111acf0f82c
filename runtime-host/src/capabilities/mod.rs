//! What a guest can touch. The per-request host state, and the one place where
//! interfaces are added to the linker: a guest gets exactly what is linked
//! here and granted by its manifest entry, nothing of the host beyond that.

pub mod bindings;
pub mod kv;
pub mod outbound;
pub mod variables;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use kiosk_kv::KvBackend;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::limits::GuestLimiter;
use crate::variables::ComponentVariables;

use self::outbound::{OutboundHooks, OutboundPolicy};

/// What the manifest grants one component, prepared once at load.
#[derive(Clone, Default)]
pub struct Grants {
    /// The component id (for error messages and logs).
    pub component: String,
    /// Environment variables (manifest `environment`, then `-e` values).
    pub environment: Vec<(String, String)>,
    /// Host directory mounted read-only at guest `/` (the staged `files`).
    pub files_root: Option<PathBuf>,
    /// Key-value stores by label: only those in `key_value_stores`.
    pub kv_stores: BTreeMap<String, Arc<dyn KvBackend>>,
    /// The component's declared variables, resolved.
    pub variables: ComponentVariables,
    /// Where outbound HTTP may go.
    pub outbound: OutboundPolicy,
}

/// The state of one request's store.
pub struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundHooks,
    grants: Arc<Grants>,
    /// The instance's resource limiter.
    pub limiter: GuestLimiter,
}

impl HostState {
    /// Fresh state for one request of a component with these grants; the
    /// request already passed through `hops` kiosk-hosts before this one.
    pub fn new(grants: &Arc<Grants>, max_memory_bytes: u64, hops: u32) -> wasmtime::Result<Self> {
        let mut wasi = WasiCtxBuilder::new();
        // Spin echoes guest stdout and stderr on its own stderr.
        wasi.stdout(std::io::stderr()).stderr(std::io::stderr());
        wasi.envs(&grants.environment);
        // No sockets: outbound traffic goes through wasi:http only, where the
        // outbound policy applies.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(root) = &grants.files_root {
            // The mounted files are the app's own small, read-only files
            // (local disk, page cache): reading them on the request's thread
            // costs microseconds, while a hop to the blocking pool per
            // open/stat/read costs two context switches each. Measured on the
            // queue board (catalog read per request): see bench/run.
            // A preopen keeps the setting in force when it is added, so this
            // comes first.
            wasi.allow_blocking_current_thread(true);
            wasi.preopened_dir(root, "/", FsPerms::ReadOnly)?;
        }
        Ok(Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHooks::new(grants.outbound.clone(), hops),
            grants: grants.clone(),
            limiter: GuestLimiter::new(max_memory_bytes),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// The linker every component is instantiated with: WASI 0.2 (cli, io,
/// clocks, random, filesystem — sockets present but denied), wasi:http,
/// Spin's key-value and variables, wasi:keyvalue and wasi:config. What each
/// component may reach through them is decided by its [`Grants`].
pub fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    bindings::Capabilities::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;
    Ok(linker)
}
