//! The cost of one fresh instance per request: a new store with its host
//! state, and instantiation from the pre-instantiated component, for each
//! component of the kiosk-api app (spin.toml) and the trivial `hello`.
//!
//! Run: scripts/build-guests && cargo bench -p kiosk-host --bench instantiate

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use kiosk_host::capabilities::{Grants, HostState, build_linker};
use kiosk_host::engine::{CompileCache, EngineSettings, build_engine};
use kiosk_host::limits::install_deadline;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

fn components(repo: &Path) -> Vec<(String, std::path::PathBuf)> {
    let manifest = kiosk_manifest::load(&repo.join("spin.toml")).expect("spin.toml");
    let mut list: Vec<_> = manifest
        .components
        .values()
        .map(|c| (c.id.clone(), c.source.clone()))
        .collect();
    list.push((
        "hello".into(),
        repo.join("target/wasm32-wasip2/release/hello.wasm"),
    ));
    list
}

fn instantiate(c: &mut Criterion) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let engine = build_engine(&EngineSettings::default()).unwrap();
    let linker = build_linker(&engine).unwrap();
    let cache = CompileCache::new(repo.join("target/bench-compiled"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let grants = Arc::new(Grants::default());
    let mut group = c.benchmark_group("instantiate");
    for (id, wasm) in components(repo) {
        let (component, _) = cache.load(&engine, &wasm).unwrap();
        let pre = ProxyPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        group.bench_function(&id, |b| {
            b.to_async(&runtime).iter(|| async {
                let state = HostState::new(&grants, 64 << 20, 0).unwrap();
                let mut store = Store::new(&engine, state);
                store.limiter(|s| &mut s.limiter);
                install_deadline(
                    &mut store,
                    std::time::Instant::now() + std::time::Duration::from_secs(30),
                );
                let proxy = pre.instantiate_async(&mut store).await.unwrap();
                std::hint::black_box(proxy);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, instantiate);
criterion_main!(benches);
