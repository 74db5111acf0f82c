//! Idempotency keys as a well-behaved core honours them: the first request
//! with a key executes, later ones with the same body get the same answer,
//! and a key is never reused for another body.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::StatusCode;

/// How many keys are remembered before the oldest are forgotten.
pub const CAPACITY: usize = 10_000;

/// What identifies a request body: its JSON value when it is JSON (so key
/// order and spacing do not matter), its bytes otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum Fingerprint {
    Json(serde_json::Value),
    Raw(Bytes),
}

impl Fingerprint {
    /// The fingerprint of a request body.
    pub fn of(body: &Bytes) -> Fingerprint {
        serde_json::from_slice(body)
            .map(Fingerprint::Json)
            .unwrap_or_else(|_| Fingerprint::Raw(body.clone()))
    }
}

/// An answer given to the first request with a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why a request with a known key is not executed.
#[derive(Debug, PartialEq)]
pub enum Known {
    /// Answered before: send this again.
    Replay(Remembered),
    /// The first request with this key has not been answered yet.
    InProgress,
    /// The key was used with another body.
    Mismatch,
}

#[derive(Debug)]
struct Entry {
    token: u64,
    fingerprint: Fingerprint,
    answer: Option<Remembered>,
}

/// The keys seen, oldest first, bounded to a capacity.
#[derive(Debug)]
pub struct Memory {
    capacity: usize,
    next_token: u64,
    entries: HashMap<String, Entry>,
    order: VecDeque<String>,
}

impl Memory {
    /// An empty memory keeping at most `capacity` keys.
    pub fn new(capacity: usize) -> Memory {
        Memory {
            capacity,
            next_token: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Claims a new key, returning the token to `finish` or `abandon` it
    /// with; says why not if the key is known.
    pub fn begin(&mut self, key: &str, fingerprint: Fingerprint) -> Result<u64, Known> {
        if let Some(entry) = self.entries.get(key) {
            return Err(if entry.fingerprint != fingerprint {
                Known::Mismatch
            } else if let Some(answer) = &entry.answer {
                Known::Replay(answer.clone())
            } else {
                Known::InProgress
            });
        }
        self.next_token += 1;
        let token = self.next_token;
        let entry = Entry {
            token,
            fingerprint,
            answer: None,
        };
        self.entries.insert(key.to_string(), entry);
        self.order.push_back(key.to_string());
        while self.entries.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        Ok(token)
    }

    /// Remembers the answer to the request that claimed `key`.
    pub fn finish(&mut self, key: &str, token: u64, answer: Remembered) {
        if let Some(entry) = self.entries.get_mut(key).filter(|e| e.token == token) {
            entry.answer = Some(answer);
        }
    }

    /// Forgets a claim whose request was not executed, so a retry can be.
    pub fn abandon(&mut self, key: &str, token: u64) {
        let claimed = self.entries.get(key).is_some_and(|e| e.token == token);
        if claimed && self.entries[key].answer.is_none() {
            self.entries.remove(key);
            self.order.retain(|k| k != key);
        }
    }
}

/// A key claimed by the request executing it; forgotten when dropped
/// unless the answer was remembered.
#[derive(Debug)]
pub struct Claim {
    memory: Arc<Mutex<Memory>>,
    key: String,
    token: u64,
}

impl Claim {
    /// Claims `key` for `fingerprint`, or says why not.
    pub fn begin(
        memory: &Arc<Mutex<Memory>>,
        key: &str,
        fingerprint: Fingerprint,
    ) -> Result<Claim, Known> {
        let token = lock(memory).begin(key, fingerprint)?;
        Ok(Claim {
            memory: memory.clone(),
            key: key.to_string(),
            token,
        })
    }

    /// Remembers the answer for later requests with the same key.
    pub fn finish(self, answer: Remembered) {
        lock(&self.memory).finish(&self.key, self.token, answer);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.memory).abandon(&self.key, self.token);
    }
}

fn lock(memory: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
    memory.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &'static str) -> Fingerprint {
        Fingerprint::of(&Bytes::from_static(text.as_bytes()))
    }

    fn created(id: &'static str) -> Remembered {
        Remembered {
            status: StatusCode::CREATED,
            body: Bytes::from_static(id.as_bytes()),
        }
    }

    #[test]
    fn replays_the_first_answer() {
        let mut memory = Memory::new(10);
        let token = memory.begin("k", body(r#"{"a":1,"b":2}"#)).unwrap();
        assert_eq!(
            memory.begin("k", body(r#"{"a":1,"b":2}"#)),
            Err(Known::InProgress)
        );
        memory.finish("k", token, created("tr-1"));
        let same = body(r#"{ "b": 2, "a": 1 }"#);
        assert_eq!(memory.begin("k", same), Err(Known::Replay(created("tr-1"))));
        assert_eq!(
            memory.begin("k", body(r#"{"a":1,"b":3}"#)),
            Err(Known::Mismatch)
        );
        assert_eq!(memory.begin("k", body("not json")), Err(Known::Mismatch));
        assert!(memory.begin("other", body("{}")).is_ok());
    }

    #[test]
    fn a_different_body_is_refused_while_in_progress() {
        let mut memory = Memory::new(10);
        assert!(memory.begin("k", body("{}")).is_ok());
        assert_eq!(memory.begin("k", body("[]")), Err(Known::Mismatch));
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let mut memory = Memory::new(2);
        for key in ["a", "b", "c"] {
            let token = memory.begin(key, body("{}")).unwrap();
            memory.finish(key, token, created("tr"));
        }
        assert_eq!(memory.entries.len(), 2);
        assert!(memory.begin("a", body("{}")).is_ok());
        assert!(matches!(
            memory.begin("c", body("{}")),
            Err(Known::Replay(_))
        ));
    }

    #[test]
    fn an_abandoned_claim_lets_a_retry_execute() {
        let memory = Arc::new(Mutex::new(Memory::new(10)));
        let claim = Claim::begin(&memory, "k", body("{}")).unwrap();
        assert_eq!(
            Claim::begin(&memory, "k", body("{}")).unwrap_err(),
            Known::InProgress
        );
        drop(claim);
        let retry = Claim::begin(&memory, "k", body("{}")).unwrap();
        retry.finish(created("tr-2"));
        assert_eq!(
            Claim::begin(&memory, "k", body("{}")).unwrap_err(),
            Known::Replay(created("tr-2"))
        );
        assert_eq!(lock(&memory).order.len(), 1);
    }

    #[test]
    fn a_stale_claim_does_not_touch_a_newer_one() {
        let mut memory = Memory::new(1);
        let old = memory.begin("k", body("{}")).unwrap();
        memory.begin("other", body("{}")).unwrap();
        let new = memory.begin("k", body("{}")).unwrap();
        memory.abandon("k", old);
        memory.finish("k", old, created("tr-old"));
        assert_eq!(memory.begin("k", body("{}")), Err(Known::InProgress));
        memory.finish("k", new, created("tr-new"));
        assert_eq!(
            memory.begin("k", body("{}")),
            Err(Known::Replay(created("tr-new")))
        );
    }
}
