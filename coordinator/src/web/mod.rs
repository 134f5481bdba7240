//! The coordinator's HTTP listener beside gRPC: Prometheus metrics (`/metrics`, [`metrics`]),
//! a read-only JSON API (`/api/jobs`, `/api/jobs/{id}`, `/api/workers`, `/api/models`,
//! [`models`]) and the dashboard that draws it (`/`, one HTML page with its script, no build
//! step). It reads the same [`Role`] as the gRPC service: a standby answers 503 naming the
//! leader. It has no credentials: it listens on loopback unless told otherwise.

mod metrics;
mod models;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::control::Control;
use crate::follow::job_json;
use crate::service::Role;

/// Where the listener goes unless told otherwise: an ephemeral loopback port.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");

/// A running HTTP listener.
pub struct Web {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Web {
    /// Listens on `listen` (port 0: any free port) for the coordinator whose role `role`
    /// follows.
    pub async fn start(listen: SocketAddr, role: watch::Receiver<Role>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "the dashboard and metrics listen beyond loopback without credentials: anyone who reaches them sees every job"
            );
        }
        let router = Router::new()
            .route("/", get(dashboard))
            .route("/metrics", get(metrics_text))
            .route("/api/jobs", get(jobs))
            .route("/api/jobs/{id}", get(job))
            .route("/api/workers", get(workers))
            .route("/api/models", get(models_json))
            .fallback(not_found)
            .with_state(role);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
        });
        Ok(Self { addr, stop, task })
    }

    /// `http://ADDR`, with an unspecified address as loopback.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// Stops listening and waits for open requests to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Ok(Err(e)) = self.task.await {
            tracing::warn!(error = %e, "the HTTP listener failed");
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

/// The leader's control plane, or a standby's 503 naming the leader.
fn control(role: &watch::Receiver<Role>) -> Result<Control, Box<Response>> {
    match &*role.borrow() {
        Role::Leader(control) => Ok(control.clone()),
        Role::Standby { leader } => Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            match leader {
                Some(url) => format!("this coordinator is a standby; the leader is at {url}"),
                None => "this coordinator is a standby and no leader is elected yet".to_owned(),
            },
        ))),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such page; there are /, /metrics, /api/jobs, /api/jobs/ID, /api/workers and /api/models",
    )
}

async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD,
    )
        .into_response()
}

async fn metrics_text(State(role): State<watch::Receiver<Role>>) -> Response {
    match control(&role) {
        Ok(control) => (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::encode(&control.snapshot(), control.checkpoint_commits()),
        )
            .into_response(),
        Err(refused) => *refused,
    }
}

async fn jobs(State(role): State<watch::Receiver<Role>>) -> Response {
    match control(&role) {
        Ok(control) => {
            let jobs: Vec<Value> = control.snapshot().jobs.iter().map(job_json).collect();
            json_response(StatusCode::OK, &Value::Array(jobs))
        }
        Err(refused) => *refused,
    }
}

async fn job(State(role): State<watch::Receiver<Role>>, Path(id): Path<String>) -> Response {
    let control = match control(&role) {
        Ok(control) => control,
        Err(refused) => return *refused,
    };
    match control.job(&id) {
        Ok(job) => {
            let mut body = job_json(&job);
            body["history"] =
                serde_json::to_value(control.history(&id).unwrap_or_default()).unwrap_or_default();
            json_response(StatusCode::OK, &body)
        }
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn workers(State(role): State<watch::Receiver<Role>>) -> Response {
    match control(&role) {
        Ok(control) => json_response(
            StatusCode::OK,
            &serde_json::to_value(control.snapshot().workers).unwrap_or_default(),
        ),
        Err(refused) => *refused,
    }
}

async fn models_json(State(role): State<watch::Receiver<Role>>) -> Response {
    match control(&role) {
        Ok(control) => json_response(
            StatusCode::OK,
            &models::list(&control.snapshot().jobs).await,
        ),
        Err(refused) => *refused,
    }
}
