//! Host bindings generated from `wit/` (the interfaces wasmtime's own crates
//! do not provide).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "kiosk:host/capabilities",
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/key-value.store": crate::capabilities::kv::SpinStore,
        "wasi:keyvalue/store.bucket": crate::capabilities::kv::Bucket,
        "wasi:keyvalue/atomics.cas": crate::capabilities::kv::Cas,
    },
});
