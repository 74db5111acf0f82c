//! Opens the key-value backends the application uses, from the runtime
//! config (Spin's `[key_value_store.LABEL]`), with Spin's default: label
//! `default` is an SQLite file in the state dir.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use kiosk_kv::{KvBackend, RedisStore, SqliteStore};
use kiosk_manifest::Manifest;

use crate::runtime_config::{KvStoreConfig, RuntimeConfig};

/// File name of the default store, as Spin names it.
pub const DEFAULT_STORE_FILE: &str = "sqlite_key_value.db";

/// Opens every store a component declares. A declared label with no
/// configuration (other than `default`) stops start-up, naming it.
pub async fn open_stores(
    manifest: &Manifest,
    config: &RuntimeConfig,
    state_dir: &Path,
) -> anyhow::Result<BTreeMap<String, Arc<dyn KvBackend>>> {
    let mut used = BTreeSet::new();
    for component in manifest.components.values() {
        for label in &component.key_value_stores {
            if label != "default" && !config.key_value_stores.contains_key(label) {
                anyhow::bail!(
                    "{}:{}: component `{}`: unknown key_value_stores label `{label}` \
                     (configure it with [key_value_store.{label}] in the runtime config)",
                    manifest.path.display(),
                    component.location.line,
                    component.id
                );
            }
            used.insert(label.clone());
        }
    }
    let mut stores: BTreeMap<String, Arc<dyn KvBackend>> = BTreeMap::new();
    for label in used {
        let default_config = KvStoreConfig::Spin {
            path: Some(state_dir.join(DEFAULT_STORE_FILE)),
        };
        let store_config = config
            .key_value_stores
            .get(&label)
            .unwrap_or(&default_config);
        let backend: Arc<dyn KvBackend> = match store_config {
            KvStoreConfig::Spin { path: Some(path) } => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                Arc::new(SqliteStore::open(path, &label).with_context(|| {
                    format!("key-value store `{label}`: opening {}", path.display())
                })?)
            }
            KvStoreConfig::Spin { path: None } => Arc::new(
                SqliteStore::in_memory(&label)
                    .with_context(|| format!("key-value store `{label}`"))?,
            ),
            KvStoreConfig::Redis { url } => Arc::new(
                RedisStore::connect(url)
                    .await
                    .with_context(|| format!("key-value store `{label}`: connecting to Redis"))?,
            ),
        };
        tracing::info!(label = %label, backend = %describe(store_config), "key-value store ready");
        stores.insert(label, backend);
    }
    Ok(stores)
}

fn describe(config: &KvStoreConfig) -> String {
    match config {
        KvStoreConfig::Spin { path: Some(path) } => format!("sqlite:{}", path.display()),
        KvStoreConfig::Spin { path: None } => "sqlite:memory".into(),
        // Never log credentials a URL may carry.
        KvStoreConfig::Redis { url } => match url::Url::parse(url) {
            Ok(u) => format!(
                "redis://{}:{}",
                u.host_str().unwrap_or("?"),
                u.port().unwrap_or(6379)
            ),
            Err(_) => "redis".into(),
        },
    }
}
