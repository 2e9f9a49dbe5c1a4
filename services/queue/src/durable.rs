//! The service's own durable consumers (the scheduler, the dependency watcher): shared by
//! every `vibehq up`, so each message is handled by one of them, and kept across restarts.

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// A durable consumer's messages, as they are pulled.
pub(crate) struct Messages {
    name: String,
    stream: pull::Stream,
}

/// Opens the durable consumer `config` names, creating it on `stream` if it is not there.
pub(crate) async fn open(stream: &Stream, config: pull::Config) -> Result<Messages, Error> {
    let name = config.durable_name.clone().unwrap_or_default();
    let consumer = stream
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|e| Error::nats("create the service's consumer", e))?;
    let stream = consumer
        .messages()
        .await
        .map_err(|e| Error::nats("pull the service's consumer", e))?;
    Ok(Messages { name, stream })
}

impl Messages {
    /// The next message, or `None` once `shutdown` is cancelled. A failed pull is retried.
    pub(crate) async fn next(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Option<async_nats::jetstream::Message> {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                next = self.stream.next() => match next {
                    Some(Ok(message)) => return Some(message),
                    Some(Err(error)) => {
                        tracing::warn!(%error, consumer = %self.name, "a pull failed; pulling again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    None => return None,
                },
            }
        }
    }
}
