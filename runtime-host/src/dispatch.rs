//! One request, start to end: reserved endpoints, routing, Spin's headers,
//! a fresh instance within its limits, and the one log line per request.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::admin::HostMetrics;
use crate::app::{AppHandle, LoadedApp};
use crate::capabilities::HostState;
use crate::config::ServerSettings;
use crate::error::HostError;
pub use crate::intake::Connection;
use crate::intake::Intake;
use crate::limits::{DeadlineReached, InstanceSlots, RequestLimits, install_deadline};
use crate::spin_headers::{self, RequestContext};

pub use crate::error::ResponseBody;

const RESERVED_PREFIX: &str = "/.well-known/spin/";

/// Serves requests against the current application.
pub struct Dispatcher {
    app: Arc<AppHandle>,
    slots: InstanceSlots,
    limits: RequestLimits,
    intake: Intake,
    metrics: Arc<HostMetrics>,
}

/// How a guest run ended when it produced no response.
enum GuestOutcome {
    Finished,
    Deadline,
    MemoryExceeded,
    Trapped(String),
}

impl Dispatcher {
    /// A dispatcher over `app` with the limits and instance slots of
    /// `server`, counting into `metrics`.
    pub fn new(app: Arc<AppHandle>, server: &ServerSettings, metrics: Arc<HostMetrics>) -> Self {
        Self {
            app,
            slots: InstanceSlots::new(
                server.max_instances as usize,
                server.queue_depth,
                server.queue_timeout,
            ),
            limits: RequestLimits::from(server),
            intake: Intake::new(server),
            metrics,
        }
    }

    /// The host's instance slots (their use is read by `/metrics`).
    pub fn slots(&self) -> &InstanceSlots {
        &self.slots
    }

    /// The metrics requests and connections are counted in.
    pub fn metrics(&self) -> &Arc<HostMetrics> {
        &self.metrics
    }

    /// The per-address rate limiter (its refusal count is logged by the server).
    pub fn rate_limiter(&self) -> &crate::rate_limit::RateLimiter {
        &self.intake.rate
    }

    /// The application handle (for reloads).
    pub fn app(&self) -> &Arc<AppHandle> {
        &self.app
    }

    /// Answers one request that came on `connection`.
    /// Never fails: host errors become JSON responses.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        connection: &Connection,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let app = self.app.current();
        let (response, component, route) = match self.route_and_run(&app, req, connection).await {
            Ok(served) => served,
            Err((error, component, route)) => {
                if error.status().is_server_error() {
                    tracing::warn!(component = component.as_deref().unwrap_or("-"), "{error}");
                }
                if error.is_refusal() {
                    self.metrics.refused(error.code());
                }
                (error.into_response(), component, route)
            }
        };
        let took = started.elapsed();
        self.metrics
            .request(component.as_deref(), response.status(), took);
        tracing::info!(
            target: "kiosk_host::request",
            method = %method,
            path = %path,
            route = %route.as_deref().unwrap_or("-"),
            component = %component.as_deref().unwrap_or("-"),
            status = response.status().as_u16(),
            duration_us = took.as_micros() as u64,
        );
        response
    }

    #[allow(clippy::type_complexity)]
    async fn route_and_run(
        &self,
        app: &Arc<LoadedApp>,
        mut req: Request<Incoming>,
        connection: &Connection,
    ) -> Result<
        (Response<ResponseBody>, Option<String>, Option<String>),
        (HostError, Option<String>, Option<String>),
    > {
        // The match borrows the path; a cheap clone of the URI leaves the
        // request free to take Spin's headers.
        let client = connection.client;
        self.intake
            .admit(&mut req, connection)
            .map_err(|e| (e, None, None))?;
        let uri = req.uri().clone();
        let path = uri.path();
        if let Some(reserved) = path.strip_prefix(RESERVED_PREFIX) {
            return reserved_endpoint(app, reserved)
                .map(|r| (r, None, None))
                .map_err(|e| (e, None, None));
        }
        let host = spin_headers::request_host(&req).map_err(|e| (e, None, None))?;
        let Some(matched) = app.routes.route(path) else {
            return Err((HostError::NotFound, None, None));
        };
        let component = &app.components[*matched.target()];
        let id = Some(component.id.clone());
        let route = Some(matched.raw_route().to_string());
        let context = RequestContext {
            tls: connection.tls,
            host: &host,
            client,
        };
        spin_headers::apply(&mut req, &matched, &context);
        drop(host);
        match self.run_guest(app, *matched.target(), req).await {
            Ok(response) => Ok((response, id, route)),
            Err(e) => Err((e, id, route)),
        }
    }

    async fn run_guest(
        &self,
        app: &Arc<LoadedApp>,
        index: usize,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HostError> {
        let component = &app.components[index];
        // The whole body first: a slow or silent sender holds its own
        // socket, never an instance slot.
        let limit = component.max_body_bytes.min(self.limits.max_body_bytes);
        let (req, body_share) = self.intake.read_body(req, limit).await?;
        let permit = self.slots.acquire_with(component.slots.as_ref()).await?;
        let hops = req
            .headers()
            .get(crate::policy::HOP_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let deadline = Instant::now() + self.limits.deadline;
        let state =
            HostState::new(&component.grants, self.limits.max_memory_bytes, hops).map_err(|e| {
                HostError::Internal(format!("preparing component `{}`: {e}", component.id))
            })?;
        let mut store = Store::new(component.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        install_deadline(&mut store, deadline);

        let req = req.map(|body| {
            Full::new(body)
                .map_err(|never| -> wasmtime_wasi_http::Error { match never {} })
                .boxed_unsync()
        });
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = (|| -> wasmtime::Result<_> {
            let mut http = store.data_mut().http();
            let request = http.new_incoming_request(Scheme::Http, req)?;
            let outparam = http.new_response_outparam(sender)?;
            Ok((request, outparam))
        })();
        let (request, outparam) =
            prepared.map_err(|e| HostError::BadHost(format!("unusable request: {e}")))?;

        let pre = component.pre.clone();
        let id = component.id.clone();
        let task = tokio::spawn(async move {
            let _slot = permit;
            let _body = body_share;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, outparam)
                    .await
            };
            let result = tokio::time::timeout_at(deadline.into(), run).await;
            let outcome = match result {
                Err(_elapsed) => GuestOutcome::Deadline,
                Ok(Ok(())) => GuestOutcome::Finished,
                Ok(Err(e)) if e.is::<DeadlineReached>() => GuestOutcome::Deadline,
                Ok(Err(_)) if store.data().limiter.memory_exceeded() => {
                    GuestOutcome::MemoryExceeded
                }
                Ok(Err(e)) => GuestOutcome::Trapped(format!("{e:?}")),
            };
            match &outcome {
                GuestOutcome::Finished => {}
                GuestOutcome::Deadline => {
                    tracing::warn!(component = %id, "stopped at its deadline")
                }
                GuestOutcome::MemoryExceeded => {
                    tracing::warn!(component = %id, "memory limit exceeded")
                }
                GuestOutcome::Trapped(error) => {
                    tracing::warn!(component = %id, "component failed: {error}")
                }
            }
            outcome
        });

        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => {
                tracing::warn!(component = %component.id, "component answered with error code {code:?}");
                Err(HostError::NoResponse {
                    component: component.id.clone(),
                })
            }
            Err(_) => {
                let outcome = task
                    .await
                    .unwrap_or_else(|join| GuestOutcome::Trapped(join.to_string()));
                let component = component.id.clone();
                Err(match outcome {
                    GuestOutcome::Finished => HostError::NoResponse { component },
                    GuestOutcome::Deadline => HostError::DeadlineExceeded {
                        component,
                        deadline_ms: self.limits.deadline.as_millis() as u64,
                    },
                    GuestOutcome::MemoryExceeded => HostError::MemoryLimitExceeded {
                        component,
                        limit_bytes: self.limits.max_memory_bytes,
                    },
                    GuestOutcome::Trapped(_) => HostError::GuestTrapped { component },
                })
            }
        }
    }
}

/// Spin's reserved endpoints, answered as Spin answers them.
fn reserved_endpoint(app: &LoadedApp, rest: &str) -> Result<Response<ResponseBody>, HostError> {
    match rest {
        "health" => Ok(plain(StatusCode::OK, None, Bytes::from_static(b"OK"))),
        "info" => Ok(plain(
            StatusCode::OK,
            Some("application/json"),
            app.info_body.clone(),
        )),
        _ => Err(HostError::NotFound),
    }
}

fn plain(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: Bytes,
) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}
