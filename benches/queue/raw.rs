//! The raw round trip: the least any queue on JetStream does per task.

use super::*;

/// The raw ceiling: publish → pull → ack → publish a completion, with no vibehq code.
pub(crate) async fn raw_round_trip(
    nats: &NatsServer,
    tasks: usize,
    workers: usize,
    batch: usize,
) -> Run {
    let client = nats.connect().await;
    let js = jetstream::new(client.clone());
    let work = js
        .create_stream(stream::Config {
            name: "RAW_WORK".into(),
            subjects: vec!["raw.work.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("raw work stream: {e}"));
    js.create_stream(stream::Config {
        name: "RAW_DONE".into(),
        subjects: vec!["raw.done.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("raw completion stream: {e}"));
    let consumer: consumer::PullConsumer = work
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("raw consumer: {e}"));
    let completion: bytes::Bytes = encode(&Actor::worker("bench").envelope(task::Completed {
        task_id: "0197a3c2-5b1e-7c4d-9e8f-0a1b2c3d4e5f".into(),
        attempt: 1,
        output: None,
    }));

    let finish = Finish::new(tasks);
    let clock = Clock::start(&[&client]);
    let producer = tokio::spawn({
        let js = js.clone();
        async move {
            let mut acks = std::collections::VecDeque::new();
            for i in 0..tasks {
                let item = format!(r#"{{"task_id":"0197a3c2-5b1e-7c4d-9e8f-{i:012x}"}}"#);
                let publish = PublishMessage::build()
                    .payload(item.into())
                    .message_id(format!("work-{i}"));
                let ack = js
                    .send_publish("raw.work.p0.any", publish)
                    .await
                    .unwrap_or_else(|e| panic!("raw publish: {e}"));
                acks.push_back(ack);
                if acks.len() == PIPELINE
                    && let Some(ack) = acks.pop_front()
                {
                    ack.await.unwrap_or_else(|e| panic!("raw publish ack: {e}"));
                }
            }
            for ack in acks {
                ack.await.unwrap_or_else(|e| panic!("raw publish ack: {e}"));
            }
        }
    });
    let pullers: Vec<_> = (0..workers)
        .map(|_| {
            let (js, consumer, completion, finish) = (
                js.clone(),
                consumer.clone(),
                completion.clone(),
                finish.clone(),
            );
            tokio::spawn(async move {
                let mut measured = Measured::new();
                let reports = Arc::new(Semaphore::new(REPORTS));
                while finish.pending() {
                    let t = Instant::now();
                    let mut pulled = consumer
                        .batch()
                        .max_messages(batch)
                        .expires(WAIT)
                        .messages()
                        .await
                        .unwrap_or_else(|e| panic!("raw pull: {e}"));
                    let mut got = 0;
                    while let Some(message) = pulled.next().await {
                        let message = message.unwrap_or_else(|e| panic!("raw pull: {e}"));
                        if got == 0 {
                            record(&mut measured.take, t.elapsed());
                        }
                        got += 1;
                        let t = Instant::now();
                        let sequence = message
                            .info()
                            .unwrap_or_else(|e| panic!("raw metadata: {e}"))
                            .stream_sequence;
                        message
                            .ack()
                            .await
                            .unwrap_or_else(|e| panic!("raw ack: {e}"));
                        let done = PublishMessage::build()
                            .payload(completion.clone())
                            .message_id(format!("done-{sequence}"));
                        let ack = js
                            .send_publish(format!("raw.done.{sequence}"), done)
                            .await
                            .unwrap_or_else(|e| panic!("raw completion: {e}"));
                        if batch == 1 {
                            ack.await
                                .unwrap_or_else(|e| panic!("raw completion ack: {e}"));
                            record(&mut measured.finish, t.elapsed());
                            finish.add(1);
                        } else {
                            let permit = reports
                                .clone()
                                .acquire_owned()
                                .await
                                .unwrap_or_else(|e| panic!("semaphore: {e}"));
                            let finish = finish.clone();
                            tokio::spawn(async move {
                                ack.await
                                    .unwrap_or_else(|e| panic!("raw completion ack: {e}"));
                                finish.add(1);
                                drop(permit);
                            });
                        }
                    }
                    if got == 0 {
                        measured.empty += 1;
                    }
                }
                measured
            })
        })
        .collect();
    finish.wait("raw round trip").await;
    let measured = gather(pullers, "raw worker").await;
    let run = clock.stop(tasks, measured);
    producer
        .await
        .unwrap_or_else(|e| panic!("raw producer: {e}"));
    let _ = js.delete_stream("RAW_WORK").await;
    let _ = js.delete_stream("RAW_DONE").await;
    run
}
