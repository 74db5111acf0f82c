//! `fermyon:spin/key-value@2.0.0` and `wasi:keyvalue` store / atomics / batch
//! over the configured backends. A component opens only the labels in its
//! `key_value_stores`; any other label is `access-denied`. Backend failures
//! reach the guest as errors; they never trap the instance or hang it.

use std::sync::Arc;

use kiosk_kv::{Expected, KvBackend, KvError, SwapOutcome};
use wasmtime::component::Resource;

use super::HostState;
use super::bindings::fermyon::spin::key_value as spin_kv;
use super::bindings::wasi::keyvalue::{atomics, batch, store as wasi_kv};

/// An open store, as the guest holds it.
#[derive(Clone)]
pub struct OpenStore {
    label: String,
    backend: Arc<dyn KvBackend>,
}

/// `fermyon:spin/key-value.store`.
pub struct SpinStore(OpenStore);

/// `wasi:keyvalue/store.bucket`.
pub struct Bucket(OpenStore);

/// `wasi:keyvalue/atomics.cas`: a key and the value last read through it.
pub struct Cas {
    store: OpenStore,
    key: String,
    /// `None` until `current()` is called; then the value read (absent = `Some(None)`).
    current: Option<Option<Vec<u8>>>,
}

enum OpenError {
    AccessDenied,
}

impl HostState {
    fn open_store(&self, label: &str) -> Result<OpenStore, OpenError> {
        match self.grants.kv_stores.get(label) {
            Some(backend) => Ok(OpenStore {
                label: label.to_string(),
                backend: backend.clone(),
            }),
            None => {
                tracing::warn!(
                    component = %self.grants.component,
                    label,
                    "key-value store access denied: not in the component's key_value_stores"
                );
                Err(OpenError::AccessDenied)
            }
        }
    }
}

fn describe(store: &OpenStore, error: KvError) -> String {
    tracing::warn!(label = %store.label, error = %error, "key-value operation failed");
    format!("key-value store `{}`: {error}", store.label)
}

// ---- fermyon:spin/key-value@2.0.0 -------------------------------------------

fn spin_err(store: &OpenStore, error: KvError) -> spin_kv::Error {
    spin_kv::Error::Other(describe(store, error))
}

impl spin_kv::Host for HostState {}

impl spin_kv::HostStore for HostState {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<SpinStore>, spin_kv::Error>> {
        match self.open_store(&label) {
            Ok(store) => Ok(Ok(self.table.push(SpinStore(store))?)),
            Err(OpenError::AccessDenied) => Ok(Err(spin_kv::Error::AccessDenied)),
        }
    }

    async fn get(
        &mut self,
        this: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        let store = self.table.get(&this)?.0.clone();
        Ok(store
            .backend
            .get(&key)
            .await
            .map_err(|e| spin_err(&store, e)))
    }

    async fn set(
        &mut self,
        this: Resource<SpinStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let store = self.table.get(&this)?.0.clone();
        Ok(store
            .backend
            .set(&key, &value)
            .await
            .map_err(|e| spin_err(&store, e)))
    }

    async fn delete(
        &mut self,
        this: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let store = self.table.get(&this)?.0.clone();
        Ok(store
            .backend
            .delete(&key)
            .await
            .map_err(|e| spin_err(&store, e)))
    }

    async fn exists(
        &mut self,
        this: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, spin_kv::Error>> {
        let store = self.table.get(&this)?.0.clone();
        Ok(store
            .backend
            .exists(&key)
            .await
            .map_err(|e| spin_err(&store, e)))
    }

    async fn get_keys(
        &mut self,
        this: Resource<SpinStore>,
    ) -> wasmtime::Result<Result<Vec<String>, spin_kv::Error>> {
        let store = self.table.get(&this)?.0.clone();
        Ok(store
            .backend
            .list_keys()
            .await
            .map_err(|e| spin_err(&store, e)))
    }

    async fn drop(&mut self, this: Resource<SpinStore>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

// ---- wasi:keyvalue/store@0.2.0-draft2 ----------------------------------------

fn wasi_err(store: &OpenStore, error: KvError) -> wasi_kv::Error {
    wasi_kv::Error::Other(describe(store, error))
}

impl wasi_kv::Host for HostState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, wasi_kv::Error>> {
        match self.open_store(&identifier) {
            Ok(store) => Ok(Ok(self.table.push(Bucket(store))?)),
            Err(OpenError::AccessDenied) => Ok(Err(wasi_kv::Error::AccessDenied)),
        }
    }
}

impl wasi_kv::HostBucket for HostState {
    async fn get(
        &mut self,
        this: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        let store = self.table.get(&this)?.0.clone();
        Ok(store
            .backend
            .get(&key)
            .await
            .map_err(|e| wasi_err(&store, e)))
    }

    async fn set(
        &mut self,
        this: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let store = self.table.get(&this)?.0.clone();
        Ok(store
            .backend
            .set(&key, &value)
            .await
            .map_err(|e| wasi_err(&store, e)))
    }

    async fn delete(
        &mut self,
        this: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let store = self.table.get(&this)?.0.clone();
        Ok(store
            .backend
            .delete(&key)
            .await
            .map_err(|e| wasi_err(&store, e)))
    }

    async fn exists(
        &mut self,
        this: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_kv::Error>> {
        let store = self.table.get(&this)?.0.clone();
        Ok(store
            .backend
            .exists(&key)
            .await
            .map_err(|e| wasi_err(&store, e)))
    }

    async fn list_keys(
        &mut self,
        this: Resource<Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_kv::KeyResponse, wasi_kv::Error>> {
        let store = self.table.get(&this)?.0.clone();
        if cursor.is_some() {
            return Ok(Err(wasi_kv::Error::Other(
                "list_keys: cursor not supported".into(),
            )));
        }
        Ok(store
            .backend
            .list_keys()
            .await
            .map(|keys| wasi_kv::KeyResponse { keys, cursor: None })
            .map_err(|e| wasi_err(&store, e)))
    }

    async fn drop(&mut self, this: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

// ---- wasi:keyvalue/atomics@0.2.0-draft2 --------------------------------------

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wasi_kv::Error>> {
        let store = self.table.get(&bucket)?.0.clone();
        Ok(store
            .backend
            .increment(&key, delta)
            .await
            .map_err(|e| wasi_err(&store, e)))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let cas = self.table.delete(cas)?;
        // A handle whose value was never read, or read as absent, swaps only
        // if the key is still absent: never an unconditional overwrite.
        let expected = match &cas.current {
            Some(Some(value)) => Expected::Value(value.clone()),
            Some(None) | None => Expected::Absent,
        };
        match cas.store.backend.swap(&cas.key, &expected, &value).await {
            Ok(SwapOutcome::Swapped) => Ok(Ok(())),
            Ok(SwapOutcome::Conflict { current }) => {
                let retry = self.table.push(Cas {
                    store: cas.store,
                    key: cas.key,
                    current: Some(current),
                })?;
                Ok(Err(atomics::CasError::CasFailed(retry)))
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(wasi_err(&cas.store, e)))),
        }
    }
}

impl atomics::HostCas for HostState {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, wasi_kv::Error>> {
        let store = self.table.get(&bucket)?.0.clone();
        Ok(Ok(self.table.push(Cas {
            store,
            key,
            current: None,
        })?))
    }

    async fn current(
        &mut self,
        this: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        let (store, key) = {
            let cas = self.table.get(&this)?;
            (cas.store.clone(), cas.key.clone())
        };
        match store.backend.get(&key).await {
            Ok(value) => {
                self.table.get_mut(&this)?.current = Some(value.clone());
                Ok(Ok(value))
            }
            Err(e) => Ok(Err(wasi_err(&store, e))),
        }
    }

    async fn drop(&mut self, this: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

// ---- wasi:keyvalue/batch@0.2.0-draft2 ----------------------------------------

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, wasi_kv::Error>> {
        let store = self.table.get(&bucket)?.0.clone();
        // As Spin answers: only the keys that exist (here in request order).
        Ok(store
            .backend
            .get_many(&keys)
            .await
            .map(|found| found.into_iter().filter(|(_, v)| v.is_some()).collect())
            .map_err(|e| wasi_err(&store, e)))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let store = self.table.get(&bucket)?.0.clone();
        Ok(store
            .backend
            .set_many(&key_values)
            .await
            .map_err(|e| wasi_err(&store, e)))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let store = self.table.get(&bucket)?.0.clone();
        Ok(store
            .backend
            .delete_many(&keys)
            .await
            .map_err(|e| wasi_err(&store, e)))
    }
}
