//! Start-up, top to bottom: manifest → build → engine → compile → listen →
//! admin → preflight → serve → drain.

use std::os::fd::AsRawFd as _;
use std::sync::Arc;

use anyhow::Context as _;
use kiosk_manifest::Manifest;

use crate::admin::{self, HostMetrics, Readiness};
use crate::app::AppHandle;
use crate::cli::{AppArgs, UpArgs};
use crate::config::HostConfig;
use crate::dispatch::Dispatcher;
use crate::loader::{Loader, read_manifest};
use crate::policy::Destinations;
use crate::reload::{self, Reloadable};
use crate::tls::Tls;
use crate::{guest_build, handover, preflight, recycle, server, systemd};

/// `kiosk-host check`.
pub async fn check(args: &AppArgs) -> anyhow::Result<()> {
    let manifest = read_manifest(args)?;
    // The same engine settings as `up`, so the compiled cache serves both.
    let config = args.host_config()?;
    if let Some(tls) = &config.server.tls {
        Tls::new(tls)?;
    }
    let loader = Loader::new(
        args,
        &config,
        Vec::new(),
        None,
        Destinations::new(config.outbound.clone()),
    )
    .await?;
    let app = loader.load(&manifest, &config).await?;
    println!(
        "{}: ok ({} components, {} routes)",
        manifest.path.display(),
        app.components.len(),
        manifest.http_triggers.len()
    );
    Ok(())
}

/// `kiosk-host up`. Returns when drained after SIGTERM/SIGINT, or after a
/// new process took over its listeners (`inherited`: the sockets this one
/// took over, see [`crate::handover`]).
pub async fn up(args: UpArgs, inherited: Option<handover::Inherited>) -> anyhow::Result<()> {
    // The executable as started: a binary replaced there runs at handover.
    let exe = std::env::current_exe().context("locating the kiosk-host executable")?;
    let config = args.host_config()?;
    let manifest = read_manifest(&args.app)?;
    if args.build {
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || guest_build::build_components(&manifest))
            .await
            .context("build task")??;
    }
    if let Some(environment) = &config.environment {
        tracing::info!(environment = %environment, "environment");
    }
    let server = &config.server;
    // Certificates first: a broken one stops start-up before anything binds.
    let tls = match &server.tls {
        Some(settings) => Some(Arc::new(Tls::new(settings)?)),
        None => None,
    };
    // SIGHUP and SIGUSR2 must not end the process from here on (their
    // default action): they are held until the app serves, then each
    // hangup reloads and each SIGUSR2 hands over.
    let hangups = reload::hangups()?;
    let handovers = handover::requests()?;
    // Bind next (or take over a running process's sockets): `self`
    // requests and the loop guard need the real address (port 0 picks one).
    let (listeners, admin_listener) = listen(&config, tls.clone(), inherited.as_ref()).await?;
    // What a handover passes on: every listener, the admin one last.
    let fds: Vec<_> = listeners
        .iter()
        .map(|l| l.tcp.as_raw_fd())
        .chain(admin_listener.as_ref().map(|a| a.as_raw_fd()))
        .collect();
    // `self` requests go to a plain listener when there is one.
    let own = listeners
        .iter()
        .rev()
        .find(|l| l.tls.is_none())
        .unwrap_or(&listeners[0]);
    let self_authority = own.tcp.local_addr()?.to_string().parse().ok();
    // Metrics are counted from here on; only the admin listener shows them.
    let metrics = Arc::new(HostMetrics::new(config.environment.as_deref()));
    // One set of destination policies for the host's life: caps, breakers
    // and connection pools outlive any one version of the app.
    let destinations =
        Destinations::with_metrics(config.outbound.clone(), metrics.outbound.clone());
    let loader = Loader::new(
        &args.app,
        &config,
        args.env.clone(),
        self_authority,
        destinations.clone(),
    )
    .await?;
    let loaded = loader.load(&manifest, &config).await?;
    metrics.app_in_force(&loaded.name, loaded.version.as_deref());

    let dispatcher = Arc::new(Dispatcher::new(
        Arc::new(AppHandle::new(loaded)),
        server,
        metrics.clone(),
    ));
    // The admin listener answers (`/ready`: 503 starting) from before the
    // preflight until the process exits, through the drain.
    let readiness = Arc::new(Readiness::default());
    if let Some(admin_listener) = admin_listener {
        let local = admin::start(
            admin_listener,
            metrics,
            dispatcher.clone(),
            destinations,
            readiness.clone(),
        )
        .await?;
        println!("Admin http://{local}");
        tracing::info!(address = %local, "admin listener");
    }
    // The app may refuse to run (e.g. credentials wrong for its
    // environment): ask it before anyone is served or told where to connect.
    preflight::run(&dispatcher, server).await?;
    announce(&manifest, &listeners)?;
    readiness.set_ready();
    match &inherited {
        Some(inherited) => inherited.take_over(),
        None => systemd::ready(&status_line(&listeners)),
    }
    systemd::spawn_watchdog();
    tokio::spawn(reload::on_hangup(
        hangups,
        Reloadable {
            args: args.clone(),
            config: config.clone(),
            tls: tls.clone(),
            loader,
            dispatcher: dispatcher.clone(),
        },
    ));
    // Recycling asks for a handover as SIGUSR2 does; both end with serving.
    let (recycle_requests, recycling) = tokio::sync::mpsc::channel(1);
    let recycler = config
        .recycle
        .enabled()
        .then(|| tokio::spawn(recycle::watch(config.recycle.clone(), recycle_requests)));
    let handing_over = tokio::spawn(handover::on_request(handovers, recycling, exe, fds));
    // A process on its way out hands nothing over any more.
    let stop_handing_over = || {
        handing_over.abort();
        if let Some(recycler) = &recycler {
            recycler.abort();
        }
    };
    let stop = async {
        tokio::select! {
            () = server::termination_signal() => {
                stop_handing_over();
                // Not ready from the signal on: load balancers stop
                // sending while in-flight requests finish. With a drain
                // delay, the listeners still accept meanwhile, so a
                // balancer that polls /ready has stopped before they
                // close (a second signal ends the delay).
                readiness.set_draining();
                systemd::stopping();
                if !server.drain_delay.is_zero() {
                    tracing::info!(delay = ?server.drain_delay, "not ready; still accepting for the drain delay");
                    tokio::select! {
                        () = tokio::time::sleep(server.drain_delay) => {}
                        () = server::termination_signal() => {}
                    }
                }
            }
            // The new process serves these addresses now (its /ready
            // included): nothing to tell anyone.
            () = handover::replaced() => stop_handing_over(),
        }
    };
    let cut = server::serve(listeners, dispatcher, server, stop, server.drain_timeout).await;
    if cut > 0 {
        anyhow::bail!("shut down with requests still in flight after the drain timeout");
    }
    Ok(())
}

/// What `systemctl status` shows while serving.
fn status_line(listeners: &[server::Listener]) -> String {
    let addresses: Vec<String> = listeners.iter().filter_map(|l| l.url().ok()).collect();
    format!("serving on {}", addresses.join(", "))
}

/// The listeners of `config`: bound, or the ones handed over, in the same
/// order (the HTTPS or main one, then the plain one), and the admin
/// listener's socket, if there is one (handed over last).
async fn listen(
    config: &HostConfig,
    tls: Option<Arc<Tls>>,
    inherited: Option<&handover::Inherited>,
) -> anyhow::Result<(Vec<server::Listener>, Option<tokio::net::TcpListener>)> {
    let server = &config.server;
    let mut wanted = vec![(server.listen, tls)];
    if let Some(plain) = server.plain_listen {
        wanted.push((plain, None));
    }
    let admin = config.admin.listen;
    let Some(inherited) = inherited else {
        let mut listeners = Vec::new();
        for (address, tls) in wanted {
            listeners.push(bind(address, tls).await?);
        }
        let admin = match admin {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("admin listener on {address}"))?,
            ),
            None => None,
        };
        return Ok((listeners, admin));
    };
    let count = wanted.len() + usize::from(admin.is_some());
    anyhow::ensure!(
        inherited.listeners.len() == count,
        "handover: {} sockets handed over, the configuration listens on {count}; restart instead",
        inherited.listeners.len(),
    );
    let take = |socket: &std::net::TcpListener, address: std::net::SocketAddr| {
        let local = socket.local_addr()?;
        anyhow::ensure!(
            address.port() == 0 || address == local,
            "handover: the configuration listens on {address}, the handed-over socket on {local}; restart instead"
        );
        Ok(tokio::net::TcpListener::from_std(socket.try_clone()?)?)
    };
    let mut sockets = inherited.listeners.iter();
    let mut listeners = Vec::new();
    for (address, tls) in wanted {
        let socket = sockets.next().expect("counted above");
        listeners.push(server::Listener {
            tcp: take(socket, address)?,
            tls,
        });
    }
    let admin = match admin {
        Some(address) => Some(take(sockets.next().expect("counted above"), address)?),
        None => None,
    };
    Ok((listeners, admin))
}

async fn bind(
    address: std::net::SocketAddr,
    tls: Option<Arc<Tls>>,
) -> anyhow::Result<server::Listener> {
    let tcp = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))?;
    Ok(server::Listener { tcp, tls })
}

fn announce(manifest: &Manifest, listeners: &[server::Listener]) -> anyhow::Result<()> {
    // Spin prints these on stdout; scripts and tests read the addresses here.
    for listener in listeners {
        let url = listener.url()?;
        println!("Serving {url}");
        tracing::info!(manifest = %manifest.path.display(), address = %listener.tcp.local_addr()?, scheme = listener.scheme(), "serving");
    }
    let base = listeners[0].url()?;
    println!("Available Routes:");
    for trigger in &manifest.http_triggers {
        if let kiosk_manifest::RouteSpec::Path(route) = &trigger.route {
            println!("  {}: {base}{route}", trigger.component);
        }
    }
    Ok(())
}
