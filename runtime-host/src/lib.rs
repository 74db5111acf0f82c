//! kiosk-host: serves a Spin HTTP application (spin.toml) on wasmtime with a
//! fresh, isolated instance for every request.

pub mod admin;
pub mod app;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod connections;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod guest_build;
pub mod handover;
pub mod intake;
pub mod kv_stores;
pub mod limits;
pub mod loader;
pub mod policy;
pub mod preflight;
pub mod rate_limit;
pub mod recycle;
pub mod reload;
pub mod request_body;
pub mod runtime_config;
pub mod server;
pub mod spin_headers;
pub mod systemd;
pub mod tls;
pub mod up;
pub mod variables;
