//! The design floor: the design's own JetStream operations with no vibehq code.

use super::*;

/// Headers of a floor append: the version it expects of its task (a conditional append needs
/// no message id: a retry of a stored one fails its expectation).
fn expecting(task: &str, version: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        version.to_string().as_str(),
    );
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence-Subject",
        format!("floor.{task}.>").as_str(),
    );
    headers
}

/// The design's floor: the event-sourced queue in JetStream alone, with no vibehq code.
pub(crate) async fn floor(nats: &NatsServer, tasks: usize, workers: usize, batch: usize) -> Run {
    let client = nats.connect().await;
    let js = jetstream::new(client.clone());
    let events = js
        .create_stream(stream::Config {
            name: "FLOOR".into(),
            subjects: vec!["floor.>".into()],
            storage: stream::StorageType::File,
            allow_direct: true,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("floor stream: {e}"));
    let lane: consumer::PullConsumer = events
        .create_consumer(consumer::pull::Config {
            durable_name: Some("lane".into()),
            filter_subject: "floor.*.submitted.p0.any".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: 1000,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("floor lane: {e}"));

    // A reader of every event, decoding each as the projector does.
    let read = Finish::new(3 * tasks);
    let reader = tokio::spawn({
        let (events, read) = (events.clone(), read.clone());
        async move {
            let ordered = events
                .create_consumer(consumer::pull::OrderedConfig::default())
                .await
                .unwrap_or_else(|e| panic!("floor reader: {e}"));
            let mut messages = ordered
                .messages()
                .await
                .unwrap_or_else(|e| panic!("floor reader: {e}"));
            while let Some(message) = messages.next().await {
                let message = message.unwrap_or_else(|e| panic!("floor read: {e}"));
                let _ = Envelope::decode(&message.payload);
                read.add(1);
                if !read.pending() {
                    return;
                }
            }
        }
    });

    let bench = Actor::worker("bench");
    let clock = Clock::start(&[&client]);
    let producer = tokio::spawn({
        let client = client.clone();
        async move {
            for chunk in 0..tasks.div_ceil(BULK) {
                let batch_id = format!("b{chunk}");
                let count = BULK.min(tasks - chunk * BULK);
                for i in 0..count {
                    let task_id = format!("t{chunk}-{i}");
                    let event = bench.envelope(task::Submitted {
                        task_id: task_id.clone(),
                        task_type: "health_audit".into(),
                        command: "audit".into(),
                        parameters: None,
                        priority: 0,
                        worker_name: None,
                        container_name: None,
                        max_attempts: 3,
                        idempotency_key: None,
                        ..Default::default()
                    });
                    let mut headers = expecting(&task_id, 0);
                    headers.insert("Nats-Batch-Id", batch_id.as_str());
                    headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
                    let subject = format!("floor.{task_id}.submitted.p0.any");
                    if i + 1 == count {
                        headers.insert("Nats-Batch-Commit", "1");
                        let ack = client
                            .request_with_headers(subject, headers, encode(&event))
                            .await
                            .unwrap_or_else(|e| panic!("floor commit: {e}"));
                        assert!(
                            !ack.payload.starts_with(b"{\"error"),
                            "floor batch refused: {}",
                            String::from_utf8_lossy(&ack.payload)
                        );
                    } else {
                        client
                            .publish_with_headers(subject, headers, encode(&event))
                            .await
                            .unwrap_or_else(|e| panic!("floor submit: {e}"));
                    }
                }
            }
        }
    });
    let finish = Finish::new(tasks);
    // The workers share pulls, as a vibehq process's claimers do: one pull asks for every
    // worker's batch, and each takes its share.
    let (deliveries, pulled) = tokio::sync::mpsc::channel(workers * batch);
    let pulled = Arc::new(tokio::sync::Mutex::new(pulled));
    let puller = tokio::spawn({
        let (lane, finish) = (lane.clone(), finish.clone());
        async move {
            while finish.pending() {
                let mut batch = lane
                    .batch()
                    .max_messages(workers * batch)
                    .expires(WAIT)
                    .messages()
                    .await
                    .unwrap_or_else(|e| panic!("floor pull: {e}"));
                while let Some(message) = batch.next().await {
                    let message = message.unwrap_or_else(|e| panic!("floor pull: {e}"));
                    if deliveries.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let pullers: Vec<_> = (0..workers)
        .map(|w| {
            let (js, pulled, finish) = (js.clone(), pulled.clone(), finish.clone());
            tokio::spawn(async move {
                let me = Actor::new("bench", Some(format!("c{w}")));
                let mut measured = Measured::new();
                let reports = Arc::new(Semaphore::new(REPORTS));
                let finishes: Finishes = Arc::new(Mutex::new(histogram()));
                while finish.pending() {
                    let t = Instant::now();
                    let mut share = Vec::with_capacity(batch);
                    {
                        let mut pulled = pulled.lock().await;
                        match tokio::time::timeout(WAIT, pulled.recv()).await {
                            Ok(Some(message)) => share.push(message),
                            Ok(None) => break,
                            Err(_) => {}
                        }
                        while share.len() < batch
                            && let Ok(message) = pulled.try_recv()
                        {
                            share.push(message);
                        }
                    }
                    // Claim every pulled submission: its `assigned`, pipelined, expecting it.
                    let mut claims = Vec::new();
                    for message in share {
                        let version = message
                            .info()
                            .unwrap_or_else(|e| panic!("floor metadata: {e}"))
                            .stream_sequence;
                        let task_id = message
                            .subject
                            .split('.')
                            .nth(1)
                            .unwrap_or_else(|| panic!("a task subject"))
                            .to_owned();
                        let assigned = me.envelope(task::Assigned {
                            task_id: task_id.clone(),
                            attempt: 1,
                            lease_ms: 30_000,
                            lease: message.reply.as_ref().map(|r| r.to_string()),
                        });
                        let publish = PublishMessage::build()
                            .payload(encode(&assigned))
                            .headers(expecting(&task_id, version));
                        let ack = js
                            .send_publish(format!("floor.{task_id}.assigned.bench.c{w}"), publish)
                            .await
                            .unwrap_or_else(|e| panic!("floor assign: {e}"));
                        claims.push((message, task_id, ack));
                    }
                    if claims.is_empty() {
                        measured.empty += 1;
                        continue;
                    }
                    let mut held = Vec::with_capacity(claims.len());
                    for (message, task_id, ack) in claims {
                        let ack = ack.await.unwrap_or_else(|e| panic!("floor assigned: {e}"));
                        held.push((message, task_id, ack.sequence));
                    }
                    record(&mut measured.take, t.elapsed());
                    // Report the results while pulling on.
                    for (message, task_id, version) in held {
                        let permit = reports
                            .clone()
                            .acquire_owned()
                            .await
                            .unwrap_or_else(|e| panic!("semaphore: {e}"));
                        let (js, me, finish, finishes) =
                            (js.clone(), me.clone(), finish.clone(), finishes.clone());
                        tokio::spawn(async move {
                            let t = Instant::now();
                            let completed = me.envelope(task::Completed {
                                task_id: task_id.clone(),
                                attempt: 1,
                                output: None,
                            });
                            let publish = PublishMessage::build()
                                .payload(encode(&completed))
                                .headers(expecting(&task_id, version));
                            js.send_publish(
                                format!("floor.{task_id}.completed.bench.c{w}"),
                                publish,
                            )
                            .await
                            .unwrap_or_else(|e| panic!("floor complete: {e}"))
                            .await
                            .unwrap_or_else(|e| panic!("floor completed: {e}"));
                            message
                                .ack()
                                .await
                                .unwrap_or_else(|e| panic!("floor ack: {e}"));
                            if let Ok(mut h) = finishes.lock() {
                                record(&mut h, t.elapsed());
                            }
                            finish.add(1);
                            drop(permit);
                        });
                    }
                }
                let _ = reports.acquire_many(REPORTS as u32).await;
                if let Ok(h) = finishes.lock() {
                    add(&mut measured.finish, &h);
                }
                measured
            })
        })
        .collect();
    finish.wait("floor").await;
    read.wait("floor reader").await;
    let measured = gather(pullers, "floor worker").await;
    puller.abort();
    let run = clock.stop(tasks, measured);
    producer
        .await
        .unwrap_or_else(|e| panic!("floor producer: {e}"));
    let _ = reader.await;
    let _ = js.delete_stream("FLOOR").await;
    run
}
