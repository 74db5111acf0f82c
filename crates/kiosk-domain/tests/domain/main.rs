//! Integration tests of kiosk-domain through its public API, over MemoryStore.

mod claims;
mod common;
mod concurrency;
mod credentials;
mod idempotency;
mod lanes;
mod limits;
mod props;
mod retention;
mod rules;
