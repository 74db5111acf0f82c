//! Command-line interface: `kiosk-host up` and `kiosk-host check`, with
//! Spin's flag names wherever Spin has the flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    Up(UpArgs),
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
}

/// `kiosk-host up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// The application to serve.
    #[command(flatten)]
    pub app: AppArgs,

    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, env = "SPIN_HTTP_LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Run each component's build command first, when its wasm is stale.
    #[arg(long, env = "SPIN_ALWAYS_BUILD")]
    pub build: bool,

    /// Environment variable for every component (KEY=VALUE; overrides the manifest).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env_var)]
    pub env: Vec<(String, String)>,

    /// Largest linear memory of one instance, in bytes.
    #[arg(long, env = "SPIN_MAX_INSTANCE_MEMORY", default_value_t = 64 * 1024 * 1024)]
    pub max_instance_memory: u64,

    /// How long one request may run before it is stopped with 504 (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Instances that may run at once.
    #[arg(long, env = "SPIN_MAX_INSTANCE_COUNT", default_value_t = 256)]
    pub max_instances: u32,

    /// Requests that may wait for a free instance before new ones get 503.
    #[arg(long, default_value_t = 1024)]
    pub queue_depth: usize,

    /// How long a request waits for a free instance before it gets 503.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub queue_timeout: Duration,

    /// Largest request body forwarded to a component, in bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: u64,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Longest wait for an outbound HTTP connection to be established.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub outbound_connect_timeout: Duration,

    /// Longest wait for an outbound HTTP response's first byte (and between
    /// body chunks), so a dead upstream cannot hold a request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub outbound_timeout: Duration,

    /// Allocate instances on demand instead of from the pool (debugging only).
    #[arg(long)]
    pub disable_pooling: bool,
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
        assert_eq!(up.request_timeout, Duration::from_millis(500));
    }

    #[test]
    fn a_malformed_env_flag_is_refused() {
        let err = Cli::try_parse_from(["kiosk-host", "up", "-e", "NOEQUALS"]).unwrap_err();
        assert!(err.to_string().contains("expected KEY=VALUE"), "{err}");
    }
}
