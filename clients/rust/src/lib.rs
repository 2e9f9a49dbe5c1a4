//! `vibehq-client`: what a worker or a service needs of a running vibehq, over its HTTP API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vibehq_client::Error> {
//! use std::time::Duration;
//! use vibehq_client::{Client, NewTask};
//!
//! let vibehq = Client::new("http://127.0.0.1:8080")?.acting_as("factory-1", Some("c1"));
//! vibehq.submit(&NewTask::new("health_audit", "audit")).await?;
//! if let Some(claim) = vibehq.claim(Duration::from_secs(10)).await? {
//!     vibehq.start(&claim).await?;
//!     vibehq.heartbeat(&claim).await?;
//!     vibehq.complete(&claim, Some("ok")).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Every call is one request to the REST API (`/api/tasks…`), made as the worker (and
//! container) the client acts as, with the bearer token if one is set; a token lets it act
//! only as its own worker. A refusal is [`Error::Refused`] with the server's status, code,
//! message and the field at fault. [`Client::watch`] follows `/ws/tasks`.
//!
//! The types mirror the API's JSON (documented at `/openapi.json`); the workspace's tests run
//! every call against a real vibehq, so they cannot drift apart unnoticed.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

/// What can go wrong talking to vibehq.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("cannot reach vibehq: {0}")]
    Http(#[from] reqwest::Error),
    /// vibehq refused the request, saying why (and which field, when one is at fault).
    #[error("{status}: {message}{}", field.as_ref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Refused {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    #[error("vibehq's answer is not what this client reads: {0}")]
    Decode(String),
    #[error("the live feed failed: {0}")]
    Feed(String),
}

/// A task to submit. `task_type` and `command` are required; the rest are optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewTask {
    pub task_type: String,
    /// A command *name* a worker allows, never a shell line.
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// 0-9, higher first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Only this worker (and, with `container_name`, only that container) may take it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The client's own id (sending it again answers the same task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Not before this time (RFC 3339), or this many milliseconds from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Only once these tasks completed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
}

impl NewTask {
    pub fn new(task_type: impl Into<String>, command: impl Into<String>) -> Self {
        Self {
            task_type: task_type.into(),
            command: command.into(),
            ..Self::default()
        }
    }
}

/// A stored submission.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Submitted {
    pub task_id: String,
    /// Pass as `min_seq` to read it back.
    pub sequence: u64,
    /// False when it was sent before (same `task_id` or `idempotency_key`).
    pub created: bool,
}

/// A claimed task: what to run, and the attempt the claim holds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Claim {
    pub task_id: String,
    pub task_type: String,
    pub command: String,
    pub parameters: Option<Map<String, Value>>,
    pub priority: i64,
    pub attempt: u32,
    pub max_attempts: u32,
    /// Heartbeat more often than this, or the task goes to another container.
    pub lease_ms: u64,
}

/// What became of a failure.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FailOutcome {
    /// True if the task will be tried again.
    pub retried: bool,
    pub backoff_ms: u64,
    pub sequence: u64,
}

/// One event of the live feed (`/ws/tasks`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FeedEvent {
    pub sequence: u64,
    /// `task.submitted`, `task.assigned`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub task_id: String,
    /// The status the event moved the task to, if it moved it.
    pub status: Option<String>,
    pub worker_name: String,
    pub container_name: Option<String>,
    pub occurred_at: String,
    pub payload: Value,
}

/// The live feed: events as they are recorded, until the connection ends.
pub type Feed = futures::stream::BoxStream<'static, Result<FeedEvent, Error>>;

/// What the live feed shows: all events, or those matching each filter given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watch {
    pub status: Option<String>,
    pub worker_name: Option<String>,
    pub task_type: Option<String>,
    /// Resume right after this sequence; by default, from now on.
    pub after_seq: Option<u64>,
}

/// A client of one vibehq, acting as one worker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    worker: Option<String>,
    container: Option<String>,
}

impl Client {
    /// A client of the vibehq at `base_url` (`http://127.0.0.1:8080`).
    pub fn new(base_url: &str) -> Result<Self, Error> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::BadUrl(base_url.to_owned()));
        }
        Ok(Self {
            http: reqwest::Client::new(),
            base,
            token: None,
            worker: None,
            container: None,
        })
    }

    /// Sends `token` as `Authorization: Bearer …` (vibehq started with API tokens).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Acts as `worker` (and `container`): claims, results and submissions are recorded as it.
    pub fn acting_as(mut self, worker: &str, container: Option<&str>) -> Self {
        self.worker = Some(worker.to_owned());
        self.container = container.map(str::to_owned);
        self
    }

    /// Submits one task.
    pub async fn submit(&self, task: &NewTask) -> Result<Submitted, Error> {
        let mut body = to_object(task)?;
        self.submitter(&mut body);
        self.call(Method::POST, "/api/tasks", Some(Value::Object(body)))
            .await?
            .ok_or_else(|| Error::Decode("no answer to a submission".into()))
    }

    /// Submits up to 1,000 tasks at once, all or nothing; answered in order.
    pub async fn submit_many(&self, tasks: &[NewTask]) -> Result<Vec<Submitted>, Error> {
        let mut items = Vec::with_capacity(tasks.len());
        for task in tasks {
            let mut body = to_object(task)?;
            self.submitter(&mut body);
            items.push(Value::Object(body));
        }
        self.call(Method::POST, "/api/tasks", Some(Value::Array(items)))
            .await?
            .ok_or_else(|| Error::Decode("no answer to a submission".into()))
    }

    /// Claims the next task this worker (container) may take, waiting up to `wait` for one.
    pub async fn claim(&self, wait: Duration) -> Result<Option<Claim>, Error> {
        let mut body = self.me();
        body.insert("wait_ms".into(), json!(wait.as_millis() as u64));
        self.call(Method::POST, "/api/tasks/claim", Some(Value::Object(body)))
            .await
    }

    /// Marks the claimed task running (its program started); the answer is the event's
    /// sequence.
    pub async fn start(&self, claim: &Claim) -> Result<u64, Error> {
        let written: Value = self
            .result(claim, "start", Map::new())
            .await?
            .ok_or_else(|| Error::Decode("no answer to a start".into()))?;
        sequence(&written)
    }

    /// Extends the claim's lease; a refusal means the claim lost the task: stop working on it.
    pub async fn heartbeat(&self, claim: &Claim) -> Result<(), Error> {
        let _: Option<Value> = self.result(claim, "heartbeat", Map::new()).await?;
        Ok(())
    }

    /// Reports progress (a percentage and/or a message); extends the lease too.
    pub async fn progress(
        &self,
        claim: &Claim,
        percent: Option<f64>,
        message: Option<&str>,
    ) -> Result<(), Error> {
        let mut body = Map::new();
        if let Some(percent) = percent {
            body.insert("percent".into(), json!(percent));
        }
        if let Some(message) = message {
            body.insert("message".into(), json!(message));
        }
        let _: Option<Value> = self.result(claim, "progress", body).await?;
        Ok(())
    }

    /// Completes the claimed task with its output; the answer is the event's sequence.
    pub async fn complete(&self, claim: &Claim, output: Option<&str>) -> Result<u64, Error> {
        let mut body = Map::new();
        if let Some(output) = output {
            body.insert("output".into(), json!(output));
        }
        let written: Value = self
            .result(claim, "complete", body)
            .await?
            .ok_or_else(|| Error::Decode("no answer to a completion".into()))?;
        sequence(&written)
    }

    /// Fails the claimed task: tried again after a backoff while attempts remain, if `retry`.
    pub async fn fail(
        &self,
        claim: &Claim,
        error: &str,
        retry: bool,
    ) -> Result<FailOutcome, Error> {
        let mut body = Map::new();
        body.insert("error".into(), json!(error));
        body.insert("retry".into(), json!(retry));
        self.result(claim, "fail", body)
            .await?
            .ok_or_else(|| Error::Decode("no answer to a failure".into()))
    }

    /// Cancels a task that has not ended (operators only); a running one's worker is told.
    pub async fn cancel(&self, task_id: &str, reason: Option<&str>) -> Result<u64, Error> {
        let mut body = Map::new();
        if let Some(reason) = reason {
            body.insert("reason".into(), json!(reason));
        }
        let path = format!("/api/tasks/{}/cancel", segment(task_id));
        let written: Value = self
            .call(Method::POST, &path, Some(Value::Object(body)))
            .await?
            .ok_or_else(|| Error::Decode("no answer to a cancel".into()))?;
        sequence(&written)
    }

    /// The task's row as the projection has it (`status`, `output`, `attempts`, …); with
    /// `min_seq`, once the projection has applied that sequence.
    pub async fn task(&self, task_id: &str, min_seq: Option<u64>) -> Result<Value, Error> {
        let mut path = format!("/api/tasks/{}", segment(task_id));
        if let Some(seq) = min_seq {
            path.push_str(&format!("?min_seq={seq}"));
        }
        self.call(Method::GET, &path, None)
            .await?
            .ok_or_else(|| Error::Decode("no task row".into()))
    }

    /// Follows the live feed: every task event matching `filter`, in stream order.
    pub async fn watch(&self, filter: &Watch) -> Result<Feed, Error> {
        let mut url = format!("{}/ws/tasks", self.base.replacen("http", "ws", 1));
        let query: Vec<String> = [
            ("status", filter.status.clone()),
            ("worker_name", filter.worker_name.clone()),
            ("task_type", filter.task_type.clone()),
            ("after_seq", filter.after_seq.map(|s| s.to_string())),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name}={}", segment(&v))))
        .collect();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                url.as_str(),
            )
            .map_err(|e| Error::Feed(e.to_string()))?;
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Error::Feed("the token is not a valid header".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| Error::Feed(e.to_string()))?;
        Ok(socket
            .filter_map(|message| async move {
                use tokio_tungstenite::tungstenite::Message;
                match message {
                    Ok(Message::Text(text)) => Some(
                        serde_json::from_str::<FeedEvent>(&text)
                            .map_err(|e| Error::Decode(e.to_string())),
                    ),
                    Ok(_) => None,
                    Err(error) => Some(Err(Error::Feed(error.to_string()))),
                }
            })
            .boxed())
    }

    /// A result or heartbeat for `claim`: its attempt, as the worker holding it.
    async fn result<T: DeserializeOwned>(
        &self,
        claim: &Claim,
        what: &str,
        mut body: Map<String, Value>,
    ) -> Result<Option<T>, Error> {
        body.extend(self.me());
        body.insert("attempt".into(), json!(claim.attempt));
        let path = format!("/api/tasks/{}/{what}", segment(&claim.task_id));
        self.call(Method::POST, &path, Some(Value::Object(body)))
            .await
    }

    /// `worker_name` and `container_name`, as the client acts.
    fn me(&self) -> Map<String, Value> {
        let mut me = Map::new();
        if let Some(worker) = &self.worker {
            me.insert("worker_name".into(), json!(worker));
        }
        if let Some(container) = &self.container {
            me.insert("container_name".into(), json!(container));
        }
        me
    }

    /// A submission is recorded as made by the worker the client acts as.
    fn submitter(&self, body: &mut Map<String, Value>) {
        if let Some(worker) = &self.worker {
            body.entry("submitted_by").or_insert_with(|| json!(worker));
        }
    }

    /// One request; `None` for 204 No Content.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<T>, Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let text = response.text().await?;
        if !status.is_success() {
            return Err(refused(status, &text));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Decode(format!("{e}: {text}")))
    }
}

fn to_object(task: &NewTask) -> Result<Map<String, Value>, Error> {
    match serde_json::to_value(task) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) | Err(_) => Err(Error::Decode("a task did not encode as an object".into())),
    }
}

fn sequence(written: &Value) -> Result<u64, Error> {
    written["sequence"]
        .as_u64()
        .ok_or_else(|| Error::Decode(format!("no sequence in {written}")))
}

/// vibehq's error body as [`Error::Refused`].
fn refused(status: StatusCode, text: &str) -> Error {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let error = &body["error"];
    Error::Refused {
        status: status.as_u16(),
        code: error["code"].as_str().unwrap_or("unknown").to_owned(),
        message: error["message"]
            .as_str()
            .map_or_else(|| text.to_owned(), str::to_owned),
        field: error["field"].as_str().map(str::to_owned),
    }
}

/// `text` as one URL path segment (or query value).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_is_one_path_segment_and_a_refusal_names_its_field() {
        assert_eq!(segment("repo:acme/api 1"), "repo%3Aacme%2Fapi%201");
        let error = refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"error":{"code":"invalid_field","message":"command is required","field":"command"}}"#,
        );
        assert_eq!(
            error.to_string(),
            "422: command is required (field command)"
        );
        assert!(Client::new("localhost:8080").is_err());
    }
}
