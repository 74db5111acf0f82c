//! The Redis side of the fence: the keys under [`RESERVED_PREFIX`] and the
//! Lua scripts that read and write them, each one atomic on the server.
//!
//! - `kiosk-fence:epoch`: the current epoch, `<n>-<random>`. A new epoch has
//!   a larger `n`, so a Redis restored from an older snapshot, holding an
//!   older epoch, is never taken for a newer one.
//! - `kiosk-fence:seq:<host>`: how many fenced increments a host made.
//! - `kiosk-fence:hosts`: host id → its last heartbeat (unix ms).
//! - `kiosk-fence:raised:<epoch>`: the hosts that raised their sequences in
//!   that epoch (the barrier).

use std::collections::{BTreeMap, BTreeSet};

use ::redis::{Script, Value};

use crate::{KvError, RedisStore};

/// Keys the fence keeps in the store; guests cannot write them.
pub(crate) const RESERVED_PREFIX: &str = "kiosk-fence:";
const EPOCH_KEY: &str = "kiosk-fence:epoch";
const HOSTS_KEY: &str = "kiosk-fence:hosts";

/// Keys raised per script call, so that a long journal stays within Lua's
/// argument limits and never blocks the server for long.
const RAISE_CHUNK: usize = 500;

/// One fenced increment: refused if the epoch is not the caller's, else the
/// key and the host's sequence are incremented together.
///
/// KEYS: epoch, key, host seq. ARGV: epoch token, delta.
/// Reply: `{value, seq}`, or `{'fenced'}` when the epoch differs.
const INCREMENT_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {'fenced'}
end
local value = redis.call('INCRBY', KEYS[2], ARGV[2])
local seq = redis.call('INCR', KEYS[3])
return {value, seq}
";

/// The heartbeat, and what a host checks every poll.
///
/// KEYS: hosts, epoch, host seq. ARGV: host id, now (unix ms).
/// Reply: `{epoch or '', seq or '0', {host, ms, host, ms, ...}}`.
const HEARTBEAT_SCRIPT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local epoch = redis.call('GET', KEYS[2])
local seq = redis.call('GET', KEYS[3])
return {epoch or '', seq or '0', redis.call('HGETALL', KEYS[1])}
";

/// Settles the epoch after a host saw a problem: adopts a newer epoch set by
/// another host, or sets a new one.
///
/// KEYS: epoch. ARGV: the caller's epoch ('' if none), its number, '1' if
/// the caller saw a rewind inside its own epoch, the random part of a new one.
/// Reply: `{epoch, 1}` if this call set it, `{epoch, 0}` if adopted.
const SETTLE_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
local mine_n = tonumber(ARGV[2])
local n = 0
if current then
  n = tonumber(string.match(current, '^(%d+)-')) or 0
  if current ~= ARGV[1] and (ARGV[1] == '' or n > mine_n) then
    return {current, 0}
  end
  if current == ARGV[1] and ARGV[3] ~= '1' then
    return {current, 0}
  end
end
local new = tostring(math.max(n, mine_n) + 1) .. '-' .. ARGV[4]
redis.call('SET', KEYS[1], new)
return {new, 1}
";

/// Raises sequences to at least the values a host handed out, and, in the
/// last chunk, adds the host to the epoch's raised set. Only in the given
/// epoch; a value that is not an integer is left alone (incrementing it
/// fails anyway).
///
/// KEYS: epoch, host seq, raised set, key... ARGV: epoch token, host seq,
/// host id ('' for a chunk that is not the last), high-water mark... (ARGV[i]
/// for KEYS[i] from i = 4).
/// Reply: 1, or 0 if the epoch changed.
const RAISE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local function raise(key, target)
  local current = redis.call('GET', key)
  if current == false then
    redis.call('SET', key, target)
  else
    local number = tonumber(current)
    if number ~= nil and number < tonumber(target) then
      redis.call('SET', key, target)
    end
  end
end
raise(KEYS[2], ARGV[2])
for i = 4, #KEYS do
  raise(KEYS[i], ARGV[i])
end
if ARGV[3] ~= '' then
  redis.call('SADD', KEYS[3], ARGV[3])
end
return 1
";

/// Forgets hosts whose last heartbeat is older than ARGV[1] (unix ms).
const PRUNE_HOSTS_SCRIPT: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
    removed = removed + 1
  end
end
return removed
";

/// An epoch token, `<n>-<random>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Epoch(String);

impl Epoch {
    /// Wraps a token read from the store or the journal.
    pub(crate) fn new(token: String) -> Self {
        Self(token)
    }

    /// The token.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Its number `n` (0 if the token is malformed).
    pub(crate) fn number(&self) -> u64 {
        self.0
            .split_once('-')
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0)
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a fenced increment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncrementReply {
    /// The key now holds `value`; the host's sequence is now `seq`.
    Counted { value: i64, seq: i64 },
    /// The store's epoch is not the caller's: nothing was written.
    Fenced,
}

/// What a heartbeat read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reading {
    /// The store's epoch (`None`: there is none, e.g. after a wipe).
    pub epoch: Option<Epoch>,
    /// This host's sequence in the store (0 if absent).
    pub seq: i64,
    /// Every host's last heartbeat, unix ms.
    pub hosts: BTreeMap<String, i64>,
}

/// The fence's calls to Redis, for one host.
pub(crate) struct Protocol {
    redis: RedisStore,
    host: String,
    seq_key: String,
    increment: Script,
    heartbeat: Script,
    settle: Script,
    raise: Script,
    prune_hosts: Script,
}

impl Protocol {
    /// The calls of host `host` on `redis`.
    pub(crate) fn new(redis: RedisStore, host: &str) -> Self {
        Self {
            redis,
            host: host.to_owned(),
            seq_key: format!("{RESERVED_PREFIX}seq:{host}"),
            increment: Script::new(INCREMENT_SCRIPT),
            heartbeat: Script::new(HEARTBEAT_SCRIPT),
            settle: Script::new(SETTLE_SCRIPT),
            raise: Script::new(RAISE_SCRIPT),
            prune_hosts: Script::new(PRUNE_HOSTS_SCRIPT),
        }
    }

    /// Increments `key` by `delta` within `epoch` (EVALSHA, falling back to
    /// EVAL after a restart emptied the script cache).
    pub(crate) async fn increment(
        &self,
        epoch: &Epoch,
        key: &str,
        delta: i64,
    ) -> Result<IncrementReply, KvError> {
        let reply: Value = self
            .redis
            .run("fenced increment", |mut c| async move {
                self.increment
                    .key(EPOCH_KEY)
                    .key(key)
                    .key(&self.seq_key)
                    .arg(epoch.as_str())
                    .arg(delta)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .map_err(|e| crate::redis::increment_error(key, e))?;
        match reply {
            Value::Array(items) => match items.as_slice() {
                [Value::Int(value), Value::Int(seq)] => Ok(IncrementReply::Counted {
                    value: *value,
                    seq: *seq,
                }),
                [Value::BulkString(word)] if word == b"fenced" => Ok(IncrementReply::Fenced),
                _ => Err(unexpected("increment", &items)),
            },
            other => Err(unexpected("increment", &other)),
        }
    }

    /// Records this host's heartbeat at `now_ms` and reads the epoch, this
    /// host's sequence and every host's heartbeat.
    pub(crate) async fn heartbeat(&self, now_ms: i64) -> Result<Reading, KvError> {
        let (epoch, seq, hosts): (String, String, Vec<String>) = self
            .redis
            .run("fence heartbeat", |mut c| async move {
                self.heartbeat
                    .key(HOSTS_KEY)
                    .key(EPOCH_KEY)
                    .key(&self.seq_key)
                    .arg(&self.host)
                    .arg(now_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let seq = seq
            .parse()
            .map_err(|_| KvError::Other(format!("fence sequence {seq:?} is not an integer")))?;
        let hosts = hosts
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].parse().unwrap_or(0)))
            .collect();
        Ok(Reading {
            epoch: (!epoch.is_empty()).then(|| Epoch::new(epoch)),
            seq,
            hosts,
        })
    }

    /// Settles the epoch: adopts one newer than `mine`, or sets a new one
    /// (when there is none, when the store holds an older one, or when
    /// `rewound` and the store still holds `mine`). Returns the epoch and
    /// whether this call set it.
    pub(crate) async fn settle(
        &self,
        mine: Option<&Epoch>,
        rewound: bool,
    ) -> Result<(Epoch, bool), KvError> {
        let tail = random_hex(8)?;
        let (token, created): (String, i64) = self
            .redis
            .run("fence epoch", |mut c| async move {
                self.settle
                    .key(EPOCH_KEY)
                    .arg(mine.map_or("", Epoch::as_str))
                    .arg(mine.map_or(0, Epoch::number))
                    .arg(if rewound { "1" } else { "0" })
                    .arg(&tail)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((Epoch::new(token), created == 1))
    }

    /// Raises every key to at least its high-water mark and this host's
    /// sequence to at least `seq`, then joins `epoch`'s raised set. Returns
    /// false, having joined nothing, if the epoch changed meanwhile.
    pub(crate) async fn raise(
        &self,
        epoch: &Epoch,
        seq: i64,
        high_water: &[(String, i64)],
    ) -> Result<bool, KvError> {
        let raised_key = raised_key(epoch);
        let chunks: Vec<&[(String, i64)]> = if high_water.is_empty() {
            vec![&[]]
        } else {
            high_water.chunks(RAISE_CHUNK).collect()
        };
        let last = chunks.len() - 1;
        for (index, chunk) in chunks.into_iter().enumerate() {
            let join = if index == last {
                self.host.as_str()
            } else {
                ""
            };
            let raised_key = &raised_key;
            let done: i64 = self
                .redis
                .run("fence raise", |mut c| async move {
                    let mut call = self.raise.prepare_invoke();
                    call.key(EPOCH_KEY)
                        .key(&self.seq_key)
                        .key(raised_key)
                        .arg(epoch.as_str())
                        .arg(seq)
                        .arg(join);
                    for (key, value) in chunk {
                        call.key(key).arg(*value);
                    }
                    call.invoke_async(&mut c).await
                })
                .await?;
            if done != 1 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The hosts that raised their sequences in `epoch`.
    pub(crate) async fn raised(&self, epoch: &Epoch) -> Result<BTreeSet<String>, KvError> {
        let key = raised_key(epoch);
        self.redis
            .run("fence barrier", |mut c| async move {
                ::redis::cmd("SMEMBERS").arg(&key).query_async(&mut c).await
            })
            .await
    }

    /// Removes hosts not heard from since `before_ms` from the heartbeat hash.
    pub(crate) async fn prune_hosts(&self, before_ms: i64) -> Result<(), KvError> {
        let _removed: i64 = self
            .redis
            .run("fence prune", |mut c| async move {
                self.prune_hosts
                    .key(HOSTS_KEY)
                    .arg(before_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }
}

fn raised_key(epoch: &Epoch) -> String {
    format!("{RESERVED_PREFIX}raised:{epoch}")
}

fn unexpected(what: &str, reply: &impl std::fmt::Debug) -> KvError {
    KvError::Other(format!(
        "unexpected reply from the Redis fence {what} script: {reply:?}"
    ))
}

/// `bytes` random bytes from the OS, in hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, KvError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| KvError::Other(format!("no random bytes from the OS: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
