//! What a guest can touch. The per-request host state, and the one place where
//! interfaces are added to the linker: a guest gets exactly what is linked
//! here and granted by its manifest entry, nothing of the host beyond that.

use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::limits::GuestLimiter;

/// What the manifest grants one component, prepared once at load.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Environment variables (manifest `environment`, then `-e` values).
    pub environment: Vec<(String, String)>,
    /// Host directory mounted read-only at guest `/` (the staged `files`).
    pub files_root: Option<PathBuf>,
}

/// The state of one request's store.
pub struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundHooks,
    /// The instance's resource limiter.
    pub limiter: GuestLimiter,
}

impl HostState {
    /// Fresh state for one request of a component with these grants.
    pub fn new(grants: &Grants, max_memory_bytes: u64) -> wasmtime::Result<Self> {
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
            wasi.preopened_dir(root, "/", FsPerms::ReadOnly)?;
        }
        Ok(Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHooks,
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

/// Outbound HTTP policy. Until allow-lists are configured, every outbound
/// request is denied before any connection is made.
struct OutboundHooks;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        tracing::warn!(uri = %request.uri(), "outbound request denied: no allowed_outbound_hosts");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The linker every component is instantiated with: WASI 0.2 (cli, io,
/// clocks, random, filesystem — sockets present but denied) and wasi:http.
pub fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}
