//! The Open Inference Protocol (V2, KServe's and Triton's REST dialect) over axum: health,
//! server and model metadata, readiness and `infer`. Every answer is JSON; every mistake a
//! 4xx with `{"error": "…"}` saying what was expected, never a dropped connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::About;
use super::batch::{Queue, Request};
use super::metrics::{self, Metrics};
use super::monitor::Monitor;

/// The largest request body read (a larger one is refused with 413).
const MAX_BODY: usize = 64 << 20;
/// The input's name, and the outputs an answer holds.
const INPUT: &str = "input";
const OUTPUTS: [&str; 3] = ["logits", "probabilities", "predicted_class"];

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    queue: Queue,
    ready: Arc<AtomicBool>,
    serving: Arc<RwLock<Option<Arc<About>>>>,
    reference: String,
    metrics: Arc<Metrics>,
    /// Drift on live inputs; `None` when it is off.
    monitor: Option<Arc<Monitor>>,
}

impl App {
    pub(crate) fn new(
        queue: Queue,
        reference: String,
        metrics: Arc<Metrics>,
        monitor: Option<Arc<Monitor>>,
    ) -> Self {
        Self {
            queue,
            ready: Arc::new(AtomicBool::new(false)),
            serving: Arc::new(RwLock::new(None)),
            reference,
            metrics,
            monitor,
        }
    }

    /// The served model's name (the reference's before a version is loaded): the one
    /// `model` label, whatever name a request asked for.
    fn model_name(&self) -> String {
        self.about().map_or_else(
            || {
                self.reference
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            },
            |about| about.name.clone(),
        )
    }

    /// Metadata describes `about` from now on (its requests are answered by it once the
    /// batcher swaps it in).
    pub(crate) fn describe(&self, about: Arc<About>) {
        self.metrics.serving(&about.name, about.version);
        if let Some(monitor) = &self.monitor {
            monitor.serve(Arc::clone(&about));
        }
        *self.serving.write().unwrap_or_else(|e| e.into_inner()) = Some(about);
        self.ready.store(true, Ordering::Release);
    }

    fn about(&self) -> Option<Arc<About>> {
        self.serving
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Serves `app` on `listener` until the task is aborted.
pub(crate) async fn run(listener: tokio::net::TcpListener, app: App) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/drift", get(drift))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(version_infer),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app);
    axum::serve(listener, router).await
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A mistake: `{"error": message}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; this server speaks the Open Inference Protocol (V2): /v2, /v2/health/{live,ready}, /v2/models/NAME[/versions/N][/ready|/infer], and /v2/models/NAME/drift, /metrics",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed here: metadata and health are GET, infer is POST",
    )
}

async fn metrics_text(State(app): State<App>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        app.metrics.encode(),
    )
        .into_response()
}

async fn server_metadata() -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "name": "kiln", "version": env!("CARGO_PKG_VERSION"), "extensions": ["drift"] }),
    )
}

async fn live() -> Response {
    json_response(StatusCode::OK, &json!({ "live": true }))
}

async fn ready(State(app): State<App>) -> Response {
    let ready = app.ready.load(Ordering::Acquire);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &json!({ "ready": ready }))
}

/// A refusal: its status and message.
type Refusal = (StatusCode, String);

/// The served version when `name` (and `version`, when given) name it; the refusal otherwise.
fn served(app: &App, name: &str, version: Option<&str>) -> Result<Arc<About>, Refusal> {
    let Some(about) = app.about() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} is still loading", app.reference),
        ));
    };
    if name != about.name {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "no model {name:?} here; this server serves {:?}",
                about.name
            ),
        ));
    }
    match version {
        Some(v) if v != about.version.to_string() => Err((
            StatusCode::NOT_FOUND,
            format!(
                "{name} version {v} is not served here; this server serves version {} ({})",
                about.version, app.reference
            ),
        )),
        _ => Ok(about),
    }
}

fn metadata(about: &About) -> Value {
    let mut input_shape = vec![json!(-1)];
    input_shape.extend(about.input_shape.iter().map(|d| json!(d)));
    json!({
        "name": about.name,
        "versions": [about.version.to_string()],
        "platform": "kiln-burn",
        "inputs": [{ "name": INPUT, "datatype": "FP32", "shape": input_shape }],
        "outputs": [
            { "name": "logits", "datatype": "FP32", "shape": [-1, about.classes] },
            { "name": "probabilities", "datatype": "FP32", "shape": [-1, about.classes] },
            { "name": "predicted_class", "datatype": "INT64", "shape": [-1] },
        ],
    })
}

async fn model_metadata(State(app): State<App>, Path(name): Path<String>) -> Response {
    match served(&app, &name, None) {
        Ok(about) => json_response(StatusCode::OK, &metadata(&about)),
        Err((status, message)) => error(status, message),
    }
}

async fn version_metadata(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match served(&app, &name, Some(&version)) {
        Ok(about) => json_response(StatusCode::OK, &metadata(&about)),
        Err((status, message)) => error(status, message),
    }
}

fn readiness(app: &App, name: &str, version: Option<&str>) -> Response {
    match served(app, name, version) {
        Ok(_) => json_response(StatusCode::OK, &json!({ "name": name, "ready": true })),
        Err((status, message)) => error(status, message),
    }
}

async fn model_ready(State(app): State<App>, Path(name): Path<String>) -> Response {
    readiness(&app, &name, None)
}

async fn version_ready(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    readiness(&app, &name, Some(&version))
}

/// The live window compared with the served version's training inputs.
async fn drift(State(app): State<App>, Path(name): Path<String>) -> Response {
    if let Err((status, message)) = served(&app, &name, None) {
        return error(status, message);
    }
    let Some(monitor) = app.monitor.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "this server does not watch for drift (it was started with --no-drift)",
        );
    };
    // Sorting the window is CPU work: off the async threads.
    match tokio::task::spawn_blocking(move || monitor.report()).await {
        Ok(Some(report)) => match serde_json::to_value(&report) {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Ok(None) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} is still loading", app.reference),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn infer(State(app): State<App>, Path(name): Path<String>, body: Body) -> Response {
    answer(&app, &name, None, body).await
}

async fn version_infer(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
    body: Body,
) -> Response {
    answer(&app, &name, Some(&version), body).await
}

/// A validated infer request: its rows, and which outputs to return.
struct Inputs {
    x: Vec<f32>,
    rows: usize,
    outputs: Vec<&'static str>,
    id: Option<Value>,
}

/// Answers an infer request and counts it.
async fn answer(app: &App, name: &str, version: Option<&str>, body: Body) -> Response {
    let started = std::time::Instant::now();
    let (response, answered_by) = answer_uncounted(app, name, version, body).await;
    let seconds = answered_by.map(|_| started.elapsed().as_secs_f64());
    app.metrics.request(
        &app.model_name(),
        answered_by,
        response.status().as_u16(),
        seconds,
    );
    response
}

/// The answer, and the version that computed it (`None` when refused before).
async fn answer_uncounted(
    app: &App,
    name: &str,
    version: Option<&str>,
    body: Body,
) -> (Response, Option<u64>) {
    let refused = |response| (response, None);
    let about = match served(app, name, version) {
        Ok(about) => about,
        Err((status, message)) => return refused(error(status, message)),
    };
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return refused(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {} MiB", MAX_BODY >> 20),
            ));
        }
    };
    let inputs = match parse(&bytes, &about) {
        Ok(inputs) => inputs,
        Err(message) => return refused(error(StatusCode::BAD_REQUEST, message)),
    };
    if let Some(monitor) = &app.monitor {
        monitor.observe(about.features(), &inputs.x);
    }
    let (reply, answer) = oneshot::channel();
    let rows = inputs.rows;
    if !app.queue.infer(Request {
        x: inputs.x,
        rows,
        reply,
    }) {
        return refused(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ));
    }
    let Ok(answer) = answer.await else {
        return refused(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model did not answer (the server is shutting down)",
        ));
    };
    let classes = answer.about.classes;
    let logits = answer.logits;
    let mut outputs = Vec::new();
    for output in &inputs.outputs {
        outputs.push(match *output {
            "logits" => json!({
                "name": "logits", "datatype": "FP32", "shape": [rows, classes], "data": logits,
            }),
            "probabilities" => json!({
                "name": "probabilities", "datatype": "FP32", "shape": [rows, classes],
                "data": logits.chunks(classes.max(1)).flat_map(softmax).collect::<Vec<f32>>(),
            }),
            _ => json!({
                "name": "predicted_class", "datatype": "INT64", "shape": [rows],
                "data": logits.chunks(classes.max(1)).map(argmax).collect::<Vec<usize>>(),
            }),
        });
    }
    let mut body = json!({
        "model_name": answer.about.name,
        "model_version": answer.about.version.to_string(),
        "outputs": outputs,
    });
    if let Some(id) = inputs.id {
        body["id"] = id;
    }
    (
        json_response(StatusCode::OK, &body),
        Some(answer.about.version),
    )
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// The shape the model takes, as clients write it: `[-1, 16]`.
fn expected_shape(about: &About) -> String {
    let dims: Vec<String> = std::iter::once("-1".to_owned())
        .chain(about.input_shape.iter().map(|d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Checks an infer body against the served version: what is wrong, exactly, when it does not
/// fit.
fn parse(bytes: &[u8], about: &About) -> Result<Inputs, String> {
    let body: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the body is not JSON: {e}"))?;
    let inputs = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("the body has no `inputs` list; send {\"inputs\": [{\"name\": \"input\", \"shape\": [N, …], \"datatype\": \"FP32\", \"data\": […]}]}")?;
    let [input] = inputs.as_slice() else {
        return Err(format!(
            "{} inputs were sent; this model takes one, {INPUT:?}",
            inputs.len()
        ));
    };
    let input_name = input
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if input_name != INPUT {
        return Err(format!(
            "unknown input {input_name:?}; this model takes one input, {INPUT:?}"
        ));
    }
    let datatype = input
        .get("datatype")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if datatype != "FP32" {
        return Err(format!(
            "input datatype {datatype:?}; this model takes \"FP32\""
        ));
    }
    let shape: Vec<usize> = input
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|dims| {
            dims.iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        })
        .ok_or_else(|| {
            format!(
                "the input's `shape` is not a list of whole numbers; this model takes {}",
                expected_shape(about)
            )
        })?;
    let features = about.features();
    let fits = match shape.as_slice() {
        [_, f] => *f == features,
        [_, rest @ ..] => rest == about.input_shape.as_slice(),
        [] => false,
    };
    if !fits || shape.len() < 2 {
        return Err(format!(
            "input shape {shape:?}; this model takes {}",
            expected_shape(about)
        ));
    }
    let rows = shape[0];
    if rows == 0 {
        return Err("the input has no rows (shape [0, …])".into());
    }
    let mut x = Vec::with_capacity(rows * features);
    flatten(input.get("data").ok_or("the input has no `data`")?, &mut x)?;
    if x.len() != rows * features {
        return Err(format!(
            "the input's data holds {} values; shape {shape:?} holds {}",
            x.len(),
            rows * features
        ));
    }
    let outputs = match body.get("outputs").and_then(Value::as_array) {
        None => OUTPUTS.to_vec(),
        Some(wanted) => wanted
            .iter()
            .map(|o| {
                let name = o.get("name").and_then(Value::as_str).unwrap_or_default();
                OUTPUTS
                    .into_iter()
                    .find(|k| *k == name)
                    .ok_or_else(|| format!("unknown output {name:?}; the outputs are {OUTPUTS:?}"))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Inputs {
        x,
        rows,
        outputs,
        id: body.get("id").cloned(),
    })
}

/// Row-major values out of flat or nested lists.
fn flatten(value: &Value, out: &mut Vec<f32>) -> Result<(), String> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, out)),
        Value::Number(n) => {
            out.push(n.as_f64().unwrap_or_default() as f32);
            Ok(())
        }
        other => Err(format!(
            "the input's data holds {other}, which is not a number (FP32 data is numbers, flat or nested)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about() -> About {
        About {
            name: "digits".into(),
            version: 3,
            input_shape: vec![1, 2, 2],
            classes: 2,
            reference: Vec::new(),
        }
    }

    #[test]
    fn nested_and_flat_data_read_alike_and_mistakes_say_what_fits() {
        let body = |shape: &str, data: &str| {
            format!(
                r#"{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": {shape}, "data": {data}}}]}}"#
            )
        };
        let flat = parse(body("[2, 4]", "[1,2,3,4,5,6,7,8]").as_bytes(), &about()).expect("flat");
        let nested = parse(
            body("[2, 1, 2, 2]", "[[[[1,2],[3,4]]],[[[5,6],[7,8]]]]").as_bytes(),
            &about(),
        )
        .expect("nested");
        assert_eq!(flat.x, nested.x);
        assert_eq!((flat.rows, nested.rows), (2, 2));
        let wrong = parse(body("[2, 3]", "[1,2,3,4,5,6]").as_bytes(), &about())
            .err()
            .expect("wrong shape");
        assert!(wrong.contains("[-1, 1, 2, 2]"), "{wrong}");
        let short = parse(body("[2, 4]", "[1,2,3]").as_bytes(), &about())
            .err()
            .expect("short data");
        assert!(
            short.contains("holds 3 values") && short.contains("holds 8"),
            "{short}"
        );
        assert!(
            parse(b"not json", &about())
                .err()
                .is_some_and(|e| e.contains("not JSON"))
        );
    }

    #[test]
    fn probabilities_sum_to_one_and_argmax_picks_the_largest() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(argmax(&[1.0, 3.0, 2.0]), 1);
    }
}
