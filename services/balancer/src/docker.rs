//! The Docker driver: each instance is a container, run through the Docker Engine API on its
//! unix socket.
//!
//! The container gets `PORT` (the port it listens on inside, `container_port`) and the same
//! variables as a process instance; that port is published on the loopback interface at the
//! port the pool chose, so probes and the proxy reach it as they reach a process. Containers
//! are labelled `vibehq.instance`, `vibehq.worker` and `vibehq.container`, and removed when
//! their instance stops.
//!
//! The API is spoken directly (HTTP/1.1 over the socket, five calls: create, start, wait,
//! stop, delete) rather than through a client crate: that is all the driver needs, and it
//! keeps the dependency set small.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::Error;
use crate::runtime::{Instance, Runtime, ServiceSpec};

/// Runs instances as Docker containers.
#[derive(Debug, Clone)]
pub struct Docker {
    /// The Engine API's unix socket (`/var/run/docker.sock`).
    pub socket: PathBuf,
    /// The image every instance runs; the service's `args` are its command.
    pub image: String,
    /// The port the service listens on inside the container.
    pub container_port: u16,
}

impl Docker {
    /// One Engine API call; the status and the JSON answer (null if there is none).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), Error> {
        let engine = |detail: String| Error::Engine {
            socket: self.socket.display().to_string(),
            detail,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| engine(format!("cannot connect: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| engine(format!("handshake failed: {e}")))?;
        tokio::spawn(connection);
        let body = match body {
            Some(value) => Body::from(value.to_string()),
            None => Body::from(Bytes::new()),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "docker")
            .header("content-type", "application/json")
            .body(body)
            .map_err(|e| engine(format!("bad request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| engine(format!("no answer: {e}")))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), 1 << 20)
            .await
            .map_err(|e| engine(format!("unreadable answer: {e}")))?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(value);
        }
        Err(Error::Engine {
            socket: self.socket.display().to_string(),
            detail: format!(
                "{method} {path} answered {status}: {}",
                value["message"].as_str().unwrap_or("(no message)")
            ),
        })
    }
}

impl Runtime for Docker {
    fn start<'a>(
        &'a self,
        spec: &'a ServiceSpec,
        instance_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Instance>, Error>> {
        Box::pin(async move {
            let inside = format!("{}/tcp", self.container_port);
            let env: Vec<String> = spec
                .instance_env(instance_id, self.container_port)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut config = json!({
                "Image": self.image,
                "Env": env,
                "ExposedPorts": { inside.clone(): {} },
                "Labels": {
                    "vibehq.instance": instance_id,
                    "vibehq.worker": spec.worker_name,
                    "vibehq.container": spec.container_name,
                },
                "HostConfig": {
                    "PortBindings": { inside: [{ "HostIp": "127.0.0.1", "HostPort": port.to_string() }] },
                },
            });
            if !spec.args.is_empty() {
                config["Cmd"] = json!(spec.args);
            }
            let name = format!("vibehq-{instance_id}");
            let created = self
                .expect(
                    Method::POST,
                    &format!("/containers/create?name={name}"),
                    Some(config),
                )
                .await?;
            let id = created["Id"].as_str().unwrap_or(&name).to_owned();
            let container = Container {
                docker: self.clone(),
                id,
            };
            if let Err(error) = container
                .docker
                .expect(
                    Method::POST,
                    &format!("/containers/{}/start", container.id),
                    None,
                )
                .await
            {
                container.remove().await;
                return Err(error);
            }
            Ok(Box::new(container) as Box<dyn Instance>)
        })
    }
}

#[derive(Debug)]
struct Container {
    docker: Docker,
    id: String,
}

impl Container {
    async fn remove(&self) {
        let path = format!("/containers/{}?force=true", self.id);
        if let Err(error) = self.docker.expect(Method::DELETE, &path, None).await {
            tracing::warn!(%error, container = %self.id, "cannot remove a container");
        }
    }
}

impl Instance for Container {
    fn pid(&self) -> Option<u32> {
        None
    }

    fn exited(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let path = format!("/containers/{}/wait", self.id);
            match self.docker.expect(Method::POST, &path, None).await {
                Ok(answer) => format!(
                    "container exited with status {}",
                    answer["StatusCode"].as_i64().unwrap_or(-1)
                ),
                Err(error) => {
                    // Without a way to watch it, treat the container as lost, not as healthy.
                    format!("lost track of the container: {error}")
                }
            }
        })
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let path = format!("/containers/{}/stop?t={}", self.id, grace.as_secs().max(1));
            if let Err(error) = self.docker.expect(Method::POST, &path, None).await {
                tracing::warn!(%error, container = %self.id, "cannot stop a container");
            }
            self.remove().await;
        })
    }
}
