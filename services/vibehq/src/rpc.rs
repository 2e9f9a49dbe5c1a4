//! Asking a running `vibehq up` over NATS: one request to a ContainerTaskQueueOps operation.

use anyhow::{Context, Result};
use serde_json::Value;
use vibehq_queue::ops::Op;

use crate::config::Settings;

/// Sends `request` to `op` (as an operator: the bare subject) and returns its answer; a
/// refusal is an error carrying the server's words and code.
pub async fn call(settings: &Settings, op: Op, request: Value) -> Result<Value> {
    let client = settings
        .connection(&settings.client_nats_url()?, None)
        .connect()
        .await?;
    let subject = vibehq_queue::rpc::SPEC.subject(op);
    let answer = client
        .request(subject, request.to_string().into())
        .await
        .context("no answer from a running vibehq up (is one running on this NATS?)")?;
    if let Some(headers) = &answer.headers
        && let Some(code) = headers.get("Nats-Service-Error-Code")
    {
        let message = headers
            .get("Nats-Service-Error")
            .map_or(String::new(), |m| m.as_str().to_owned());
        // The description is the REST error body: say its message and field.
        let text = match serde_json::from_str::<Value>(&message) {
            Ok(body) => {
                let error = &body["error"];
                match (error["message"].as_str(), error["field"].as_str()) {
                    (Some(m), Some(field)) => format!("{m} (field {field})"),
                    (Some(m), None) => m.to_owned(),
                    _ => message.clone(),
                }
            }
            Err(_) => message.clone(),
        };
        anyhow::bail!("{text} ({code})");
    }
    if answer.payload.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&answer.payload).context("an unreadable answer")
}
