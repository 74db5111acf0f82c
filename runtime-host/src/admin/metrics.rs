//! The host's Prometheus metrics: one registry and the handles the
//! instrumented sites count with, created once at start-up and passed in.
//! Labels are low-cardinality only: component ids, status classes, stable
//! refusal codes and destination origins, never paths or ids.
//!
//! Counters and the histogram are updated where things happen; gauges of
//! state the host already keeps (instance slots, outbound caps, breakers)
//! are read from that state when `/metrics` is scraped, so they cannot drift.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::limits::InstanceSlots;
use crate::policy::{Destinations, Served};

/// The `Content-Type` of `/metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Request duration buckets, in seconds: up to the default request timeout.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `{component, status_class}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The component id (`-` when no component was routed to).
    pub component: String,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub status_class: &'static str,
}

/// `{component}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// The component id (`-` when no component was routed to).
    pub component: String,
}

/// `{reason}`: a host refusal's stable code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The `error.code` the client got, or the connection cap that closed it.
    pub reason: &'static str,
}

/// `{destination}`: an outbound destination's origin, `scheme://host:port`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    /// The origin, never a path.
    pub destination: String,
}

/// `{destination, outcome}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundLabels {
    /// The origin, never a path.
    pub destination: String,
    /// `ok`, `server_error`, `error`, `shared`, `busy` or `circuit-open`.
    pub outcome: &'static str,
}

/// `{app, version}`: the version of the app in force.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
    version: String,
}

/// `{outcome}`: `ok` or `refused`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
}

/// `{version, environment}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    environment: String,
}

/// Counts of outbound calls, shared with the outbound policy.
#[derive(Debug, Clone, Default)]
pub struct OutboundMetrics {
    requests: Family<OutboundLabels, Counter>,
}

impl OutboundMetrics {
    /// Counts one outbound call to `destination` and how it ended.
    pub fn record<T, E>(
        &self,
        destination: &str,
        result: &Result<http::Response<T>, E>,
        served: Served,
    ) {
        let outcome = match (served, result) {
            (Served::Refused(reason), _) => reason.as_str(),
            (Served::Shared, _) => "shared",
            (Served::Sent, Ok(response)) if response.status().is_server_error() => "server_error",
            (Served::Sent, Ok(_)) => "ok",
            (Served::Sent, Err(_)) => "error",
        };
        self.requests
            .get_or_create(&OutboundLabels {
                destination: destination.to_string(),
                outcome,
            })
            .inc();
    }
}

/// Every metric of the host, and the registry that encodes them.
#[derive(Debug)]
pub struct HostMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<ComponentLabels, Histogram>,
    refused: Family<ReasonLabels, Counter>,
    instances_in_use: Gauge,
    queue_depth: Gauge,
    /// Outbound call counts (handed to [`Destinations::with_metrics`]).
    pub outbound: OutboundMetrics,
    outbound_in_flight: Family<DestinationLabels, Gauge>,
    breaker_open: Family<DestinationLabels, Gauge>,
    connections_open: Gauge,
    tls_handshake_failures: Counter,
    app: Family<AppLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    last_reload_ok: Gauge,
    last_reload_ok_at: Gauge<f64, AtomicU64>,
    resident: Gauge,
    ready: Gauge,
    build: Family<BuildLabels, Gauge>,
}

impl Default for HostMetrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl HostMetrics {
    /// The metrics of a host serving `environment`, all registered.
    pub fn new(environment: Option<&str>) -> Self {
        let mut metrics = Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            refused: Family::default(),
            instances_in_use: Gauge::default(),
            queue_depth: Gauge::default(),
            outbound: OutboundMetrics::default(),
            outbound_in_flight: Family::default(),
            breaker_open: Family::default(),
            connections_open: Gauge::default(),
            tls_handshake_failures: Counter::default(),
            app: Family::default(),
            reloads: Family::default(),
            last_reload_ok: Gauge::default(),
            last_reload_ok_at: Gauge::default(),
            resident: Gauge::default(),
            ready: Gauge::default(),
            build: Family::default(),
            registry: Registry::default(),
        };
        // Counters are registered without `_total`: the encoder adds it.
        let r = &mut metrics.registry;
        r.register(
            "kiosk_http_requests",
            "Requests answered, by component and status class",
            metrics.requests.clone(),
        );
        r.register(
            "kiosk_http_request_duration_seconds",
            "Time to the response head, by component",
            metrics.durations.clone(),
        );
        r.register(
            "kiosk_http_refused",
            "Requests and connections the host refused under its limits, by reason",
            metrics.refused.clone(),
        );
        r.register(
            "kiosk_ready",
            "1 while /ready answers 200 (0: starting or draining)",
            metrics.ready.clone(),
        );
        r.register(
            "kiosk_instances_in_use",
            "Instance slots held by running requests",
            metrics.instances_in_use.clone(),
        );
        r.register(
            "kiosk_instance_queue_depth",
            "Requests waiting for an instance slot",
            metrics.queue_depth.clone(),
        );
        r.register(
            "kiosk_outbound_requests",
            "Outbound calls, by destination and outcome",
            metrics.outbound.requests.clone(),
        );
        r.register(
            "kiosk_outbound_in_flight",
            "Outbound calls in flight, by destination",
            metrics.outbound_in_flight.clone(),
        );
        r.register(
            "kiosk_outbound_breaker_open",
            "1 while a destination's circuit is open or half-open",
            metrics.breaker_open.clone(),
        );
        r.register(
            "kiosk_connections_open",
            "Client connections open on the serving listeners",
            metrics.connections_open.clone(),
        );
        r.register(
            "kiosk_tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            metrics.tls_handshake_failures.clone(),
        );
        r.register(
            "kiosk_app_info",
            "The app in force, by name and version (always 1)",
            metrics.app.clone(),
        );
        r.register(
            "kiosk_reloads",
            "SIGHUP reloads, by outcome",
            metrics.reloads.clone(),
        );
        r.register(
            "kiosk_config_last_reload_successful",
            "1 unless the last reload was refused",
            metrics.last_reload_ok.clone(),
        );
        r.register(
            "kiosk_config_last_reload_success_timestamp_seconds",
            "When the configuration in force was loaded (start or reload), since the Unix epoch",
            metrics.last_reload_ok_at.clone(),
        );
        for outcome in ["ok", "refused"] {
            let _ = metrics.reloads.get_or_create(&ReloadLabels { outcome });
        }
        r.register(
            "kiosk_build_info",
            "The running build and the environment in force (always 1)",
            metrics.build.clone(),
        );
        let started = Gauge::<f64, AtomicU64>::default();
        started.set(unix_now());
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the process, in bytes (what [recycle] max_resident_bytes watches)",
            metrics.resident.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            started,
        );
        metrics.last_reload(true);
        metrics.environment_in_force(environment);
        metrics
    }

    /// Names the environment in force (at start, and at each reload).
    pub fn environment_in_force(&self, environment: Option<&str>) {
        self.build.clear();
        self.build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                environment: environment.unwrap_or("").to_string(),
            })
            .set(1);
    }

    /// Counts one answered request and how long its head took.
    pub fn request(&self, component: Option<&str>, status: http::StatusCode, took: Duration) {
        let component = component.unwrap_or("-").to_string();
        let status_class = match status.as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "1xx",
        };
        self.requests
            .get_or_create(&RequestLabels {
                component: component.clone(),
                status_class,
            })
            .inc();
        self.durations
            .get_or_create(&ComponentLabels { component })
            .observe(took.as_secs_f64());
    }

    /// Names the version of the app in force (at start, and at each reload).
    pub fn app_in_force(&self, app: &str, version: Option<&str>) {
        self.app.clear();
        self.app
            .get_or_create(&AppLabels {
                app: app.to_string(),
                version: version.unwrap_or("").to_string(),
            })
            .set(1);
    }

    /// Whether the last load (the start's, or a reload) put its
    /// configuration in force.
    fn last_reload(&self, ok: bool) {
        if ok {
            self.last_reload_ok.set(1);
            self.last_reload_ok_at.set(unix_now());
        } else {
            self.last_reload_ok.set(0);
        }
    }

    /// Counts one reload attempt and how it ended.
    pub fn reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "refused" };
        self.reloads.get_or_create(&ReloadLabels { outcome }).inc();
        self.last_reload(ok);
    }

    /// Counts one refusal under the host's own limits.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts one failed TLS handshake.
    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    /// The whole registry in the Prometheus text format, with the gauges
    /// read from the host's current state.
    pub fn encode(
        &self,
        slots: &InstanceSlots,
        destinations: &Destinations,
        ready: bool,
    ) -> String {
        self.ready.set(i64::from(ready));
        self.instances_in_use.set(slots.in_use() as i64);
        self.queue_depth.set(slots.waiting() as i64);
        if let Some(resident) = crate::recycle::resident_bytes() {
            self.resident
                .set(i64::try_from(resident).unwrap_or(i64::MAX));
        }
        for (key, in_flight, open) in destinations.states() {
            let labels = DestinationLabels { destination: key };
            self.outbound_in_flight
                .get_or_create(&labels)
                .set(in_flight as i64);
            self.breaker_open
                .get_or_create(&labels)
                .set(i64::from(open));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// An open connection's share of `kiosk_connections_open`.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutboundSettings;
    use crate::error::HostError;

    fn encode(metrics: &HostMetrics) -> String {
        let slots = InstanceSlots::new(4, 8, Duration::from_secs(1));
        metrics.encode(
            &slots,
            &Destinations::new(OutboundSettings::default()),
            true,
        )
    }

    #[test]
    fn requests_are_counted_by_component_and_status_class() {
        let metrics = HostMetrics::new(Some("stag"));
        let took = Duration::from_millis(3);
        metrics.request(Some("core"), http::StatusCode::CREATED, took);
        metrics.request(Some("core"), http::StatusCode::OK, took);
        metrics.request(None, http::StatusCode::NOT_FOUND, took);
        metrics.request(Some("core"), http::StatusCode::BAD_GATEWAY, took);
        let text = encode(&metrics);
        for line in [
            "kiosk_http_requests_total{component=\"core\",status_class=\"2xx\"} 2",
            "kiosk_http_requests_total{component=\"-\",status_class=\"4xx\"} 1",
            "kiosk_http_requests_total{component=\"core\",status_class=\"5xx\"} 1",
            "kiosk_http_request_duration_seconds_count{component=\"core\"} 3",
            "# TYPE kiosk_http_request_duration_seconds histogram",
            "kiosk_instances_in_use 0",
            "kiosk_instance_queue_depth 0",
        ] {
            assert!(text.lines().any(|l| l == line), "`{line}` in\n{text}");
        }
        let build = format!(
            "kiosk_build_info{{version=\"{}\",environment=\"stag\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
        // A reload into another environment names it, and only it.
        metrics.environment_in_force(Some("prod"));
        metrics.app_in_force("kiosk-api", Some("1.2.0"));
        metrics.app_in_force("kiosk-api", Some("1.3.0"));
        let text = encode(&metrics);
        assert!(!text.contains("environment=\"stag\""), "{text}");
        assert!(text.contains("environment=\"prod\"} 1"), "{text}");
        assert_eq!(text.matches("kiosk_app_info{").count(), 1, "{text}");
        assert!(text.contains("kiosk_app_info{app=\"kiosk-api\",version=\"1.3.0\"} 1"));
    }

    #[test]
    fn open_connections_are_given_back_when_dropped() {
        let metrics = HostMetrics::default();
        let (a, b) = (metrics.connection_opened(), metrics.connection_opened());
        assert!(encode(&metrics).contains("\nkiosk_connections_open 2\n"));
        drop((a, b));
        assert!(encode(&metrics).contains("\nkiosk_connections_open 0\n"));
    }

    #[test]
    fn only_the_hosts_limits_are_refusals() {
        let refusals = [
            HostError::Overloaded { retry_after_s: 1 },
            HostError::RateLimited { retry_after_s: 1 },
            HostError::BodyTooLarge { limit: 1 },
            HostError::ShuttingDown,
        ];
        assert!(refusals.iter().all(HostError::is_refusal));
        let others = [
            HostError::NotFound,
            HostError::GuestTrapped {
                component: "core".into(),
            },
            HostError::Internal("x".into()),
        ];
        assert!(!others.iter().any(HostError::is_refusal));
    }
}
