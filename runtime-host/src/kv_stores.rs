//! Opens the key-value backends the application uses, from the runtime
//! config (Spin's `[key_value_store.LABEL]`), with Spin's default: label
//! `default` is an SQLite file in the state dir.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kiosk_kv::{FenceConfig, FencedStore, KvBackend, RedisStore, SqliteStore};
use kiosk_manifest::Manifest;

use crate::runtime_config::{KvStoreConfig, RedisDurability, RuntimeConfig, SequenceFence};

/// File name of the default store, as Spin names it.
pub const DEFAULT_STORE_FILE: &str = "sqlite_key_value.db";

/// How long start-up waits for a fenced store to check Redis (and, after a
/// rewind, for its peers) before serving; fenced increments answer
/// unavailable until it has.
const FENCE_START_WAIT: Duration = Duration::from_secs(10);

/// The stores a host has opened, by label, each with the configuration it
/// was opened from. Every version of the app loaded into one host uses
/// these: a store is opened once and lives as long as the host.
#[derive(Default)]
pub struct OpenStores(tokio::sync::Mutex<BTreeMap<String, OpenStore>>);

/// A store and the configuration it was opened from.
type OpenStore = (KvStoreConfig, Arc<dyn KvBackend>);

impl OpenStores {
    /// The store of every label a component declares: the one already
    /// open, or opened now. A declared label with no configuration (other
    /// than `default`), or one whose configuration differs from the store
    /// already open under that label, is refused, naming it.
    pub async fn open(
        &self,
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
        let mut open = self.0.lock().await;
        let mut stores = BTreeMap::new();
        for label in used {
            let default_config = KvStoreConfig::Spin {
                path: Some(state_dir.join(DEFAULT_STORE_FILE)),
            };
            let wanted = config
                .key_value_stores
                .get(&label)
                .unwrap_or(&default_config);
            if let Some((config, store)) = open.get(&label) {
                anyhow::ensure!(
                    config == wanted,
                    "key-value store `{label}`: its runtime config changed since the host \
                     opened it ({} then, {} now); a running host keeps the store it opened \
                     (restart, or hand over with SIGUSR2, to change it)",
                    describe(config),
                    describe(wanted)
                );
                stores.insert(label, store.clone());
                continue;
            }
            let store = open_one(&label, wanted, state_dir).await?;
            tracing::info!(label = %label, backend = %describe(wanted), "key-value store ready");
            open.insert(label.clone(), (wanted.clone(), store.clone()));
            stores.insert(label, store);
        }
        Ok(stores)
    }
}

/// Opens the store `label` as `config` says.
async fn open_one(
    label: &str,
    config: &KvStoreConfig,
    state_dir: &Path,
) -> anyhow::Result<Arc<dyn KvBackend>> {
    Ok(match config {
        KvStoreConfig::Spin { path: Some(path) } => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            Arc::new(SqliteStore::open(path, label).with_context(|| {
                format!("key-value store `{label}`: opening {}", path.display())
            })?)
        }
        KvStoreConfig::Spin { path: None } => Arc::new(
            SqliteStore::in_memory(label).with_context(|| format!("key-value store `{label}`"))?,
        ),
        KvStoreConfig::Redis {
            url,
            durability,
            fence,
        } => {
            let store = RedisStore::connect(url)
                .await
                .with_context(|| format!("key-value store `{label}`: connecting to Redis"))?;
            check_persistence(&store, label, *durability).await?;
            match fence {
                Some(fence) => Arc::new(start_fence(store, label, state_dir, fence).await?),
                None => {
                    tracing::warn!(
                        label = %label,
                        "no `sequences` declared for this Redis store: numbering is not \
                         fenced, and a Redis that loses writes can hand out a number twice"
                    );
                    Arc::new(store)
                }
            }
        }
    })
}

/// Wraps `store` in the sequence fence, as this host (id in the state dir),
/// with its journal in the state dir.
async fn start_fence(
    store: RedisStore,
    label: &str,
    state_dir: &Path,
    fence: &SequenceFence,
) -> anyhow::Result<FencedStore> {
    let host = kiosk_kv::fence::host_id(state_dir)
        .with_context(|| format!("key-value store `{label}`: sequence fence"))?;
    let mut config = FenceConfig::new(fence.sequences.clone());
    config.peer_timeout = fence.peer_timeout;
    config.journal_days = fence.journal_days;
    let fenced = FencedStore::start(store, label, state_dir, &host, config)
        .await
        .with_context(|| format!("key-value store `{label}`: sequence fence"))?;
    if !fenced.wait_ready(FENCE_START_WAIT).await {
        tracing::warn!(
            label,
            "the sequence fence is not ready yet (Redis unreachable, or peers still raising \
             their sequences): fenced increments answer unavailable until it is"
        );
    }
    Ok(fenced)
}

/// A store the app numbers tickets in must not forget what it acknowledged:
/// without an append-only file a Redis restart rewinds every counter, and
/// numbers are handed out twice. Refused unless the runtime configuration
/// says `durability = "volatile"`.
async fn check_persistence(
    store: &RedisStore,
    label: &str,
    durability: RedisDurability,
) -> anyhow::Result<()> {
    let volatile = durability == RedisDurability::Volatile;
    let persistence = match store.persistence().await {
        Ok(p) => p,
        Err(e) if volatile => {
            tracing::warn!(label, error = %e, "cannot read the Redis persistence settings; accepted (durability = \"volatile\")");
            return Ok(());
        }
        Err(e) => anyhow::bail!(
            "key-value store `{label}`: cannot read the Redis persistence settings ({e}); \
             kiosk-host checks `appendonly` before trusting a Redis with ticket numbers. \
             Allow CONFIG GET, or set durability = \"volatile\" for this store to accept the risk"
        ),
    };
    if !persistence.appendonly {
        if volatile {
            tracing::warn!(
                label,
                "Redis runs without an append-only file (appendonly no): a restart loses \
                 acknowledged writes; accepted because durability = \"volatile\""
            );
            return Ok(());
        }
        anyhow::bail!(
            "key-value store `{label}`: Redis runs with appendonly no, so a restart would lose \
             acknowledged writes and hand out ticket numbers twice. Set `appendonly yes` \
             (with appendfsync always or everysec) on the server, or durability = \"volatile\" \
             for this store in the runtime config to accept the risk"
        );
    }
    match persistence.appendfsync.as_str() {
        "always" => {}
        "everysec" => tracing::warn!(
            label,
            "Redis syncs its append-only file every second (appendfsync everysec): up to a \
             second of acknowledged writes can be lost if the Redis machine crashes"
        ),
        other => tracing::warn!(
            label,
            appendfsync = other,
            "Redis leaves syncing its append-only file to the OS: acknowledged writes of the \
             last tens of seconds can be lost if the Redis machine crashes"
        ),
    }
    Ok(())
}

fn describe(config: &KvStoreConfig) -> String {
    match config {
        KvStoreConfig::Spin { path: Some(path) } => format!("sqlite:{}", path.display()),
        KvStoreConfig::Spin { path: None } => "sqlite:memory".into(),
        // Never log credentials a URL may carry.
        KvStoreConfig::Redis { url, .. } => match url::Url::parse(url) {
            Ok(u) => format!(
                "redis://{}:{}",
                u.host_str().unwrap_or("?"),
                u.port().unwrap_or(6379)
            ),
            Err(_) => "redis".into(),
        },
    }
}
