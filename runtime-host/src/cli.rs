//! Command-line interface: `kiosk-host up` and `kiosk-host check`, with
//! Spin's flag names wherever Spin has the flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{HostConfig, TlsSettings};

/// Runs a Spin HTTP application on wasmtime, a fresh instance per request.
#[derive(Debug, Parser)]
#[command(name = "kiosk-host", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the application (like `spin up`).
    Up(Box<UpArgs>),
    /// Validate the manifest and components without serving.
    Check(AppArgs),
}

/// Where the application is and how it is configured.
#[derive(Debug, Clone, Args)]
pub struct AppArgs {
    /// The application manifest, or a directory holding `spin.toml`.
    #[arg(
        short = 'f',
        long = "from",
        default_value = "spin.toml",
        value_name = "APPLICATION"
    )]
    pub from: PathBuf,

    /// Runtime configuration file (Spin's `runtime-config.toml` syntax).
    #[arg(
        long = "runtime-config-file",
        env = "RUNTIME_CONFIG_FILE",
        value_name = "FILE"
    )]
    pub runtime_config_file: Option<PathBuf>,

    /// Directory for state (key-value files, compiled cache, staged assets).
    /// Defaults to `.spin` beside the manifest.
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Host configuration file (TOML: listener, limits, outbound policies,
    /// per-component settings); flags override it.
    #[arg(long = "config", env = "KIOSK_HOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `kiosk-host up`. Limits left unset come from the host configuration
/// file (`--config`), else from its defaults (`crate::config`).
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// The application to serve.
    #[command(flatten)]
    pub app: AppArgs,

    /// Address to listen on (port 0 picks a free port, printed at start) [default: 127.0.0.1:3000].
    #[arg(long, env = "SPIN_HTTP_LISTEN_ADDR")]
    pub listen: Option<SocketAddr>,

    /// Run each component's build command first, when its wasm is stale.
    #[arg(long, env = "SPIN_ALWAYS_BUILD")]
    pub build: bool,

    /// Environment variable for every component (KEY=VALUE; overrides the manifest).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env_var)]
    pub env: Vec<(String, String)>,

    /// Largest linear memory of one instance, in bytes [default: 64 MiB].
    #[arg(long, env = "SPIN_MAX_INSTANCE_MEMORY")]
    pub max_instance_memory: Option<u64>,

    /// How long one request may run before it is stopped with 504 (e.g. 30s, 500ms) [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub request_timeout: Option<Duration>,

    /// Instances that may run at once [default: 256].
    #[arg(long, env = "SPIN_MAX_INSTANCE_COUNT")]
    pub max_instances: Option<u32>,

    /// Requests that may wait for a free instance before new ones get 503 [default: 1024].
    #[arg(long)]
    pub queue_depth: Option<usize>,

    /// How long a request waits for a free instance before it gets 503 [default: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub queue_timeout: Option<Duration>,

    /// Largest request body forwarded to a component, in bytes [default: 10 MiB].
    #[arg(long)]
    pub max_body_bytes: Option<u64>,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<Duration>,

    /// Longest wait for an outbound connection, every destination [default: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub outbound_connect_timeout: Option<Duration>,

    /// Longest outbound call (connect, head and whole body), every destination [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub outbound_timeout: Option<Duration>,

    /// Allocate instances on demand instead of from the pool (debugging only).
    #[arg(long)]
    pub disable_pooling: bool,

    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "SPIN_TLS_CERT", requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SPIN_TLS_KEY", requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl UpArgs {
    /// The host configuration: the file, then these flags over it.
    pub fn host_config(&self) -> anyhow::Result<HostConfig> {
        let mut config = self.app.host_config()?;
        let server = &mut config.server;
        set(&mut server.listen, self.listen);
        set(&mut server.max_instance_memory, self.max_instance_memory);
        set(&mut server.request_timeout, self.request_timeout);
        set(&mut server.queue_timeout, self.queue_timeout);
        set(&mut server.drain_timeout, self.drain_timeout);
        set(&mut server.max_instances, self.max_instances);
        set(&mut server.queue_depth, self.queue_depth);
        set(&mut server.max_body_bytes, self.max_body_bytes);
        if self.disable_pooling {
            server.pooling = false;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            match &mut server.tls {
                Some(tls) => {
                    tls.cert = cert.clone();
                    tls.key = key.clone();
                }
                None => server.tls = Some(TlsSettings::with_files(cert.clone(), key.clone())),
            }
        }
        let outbound = &mut config.outbound.defaults;
        set(&mut outbound.connect_timeout, self.outbound_connect_timeout);
        set(&mut outbound.timeout, self.outbound_timeout);
        Ok(config)
    }
}

fn set<T>(slot: &mut T, flag: Option<T>) {
    if let Some(value) = flag {
        *slot = value;
    }
}

impl AppArgs {
    /// The host configuration file, or the defaults without one.
    pub fn host_config(&self) -> anyhow::Result<HostConfig> {
        match &self.config {
            Some(path) => crate::config::load(path),
            None => Ok(HostConfig::default()),
        }
    }
}

fn parse_env_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_takes_spins_flags() {
        let cli = Cli::try_parse_from([
            "kiosk-host",
            "up",
            "-f",
            "app/spin.toml",
            "--listen",
            "127.0.0.1:0",
            "-e",
            "A=1",
            "--env",
            "B=x=y",
            "--request-timeout",
            "500ms",
        ])
        .unwrap();
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up.app.from, PathBuf::from("app/spin.toml"));
        assert_eq!(
            up.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(up.request_timeout, Some(Duration::from_millis(500)));
        let config = up.host_config().unwrap();
        assert_eq!(config.server.request_timeout, Duration::from_millis(500));
        assert_eq!(
            config.server.max_instances, 256,
            "the default, from one place"
        );
    }

    #[test]
    fn a_malformed_env_flag_is_refused() {
        let err = Cli::try_parse_from(["kiosk-host", "up", "-e", "NOEQUALS"]).unwrap_err();
        assert!(err.to_string().contains("expected KEY=VALUE"), "{err}");
    }
}
