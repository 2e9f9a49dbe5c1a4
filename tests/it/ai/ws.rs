//! `/ws/ai`: streamed answers over a WebSocket.

use super::*;

#[tokio::test]
async fn the_websocket_streams_an_answer_then_refuses_bad_input_and_keeps_serving() {
    let rig = Rig::start().await;
    rig.a
        .push(Reply::Stream(vec!["web".into(), "socket".into()]));
    let url = format!("{}/ws/ai", rig.base.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    send(
        json!({"op": "ask", "worker_name": "w", "prompt": "hi"}),
        &mut socket,
    )
    .await;
    let mut text = String::new();
    let done = loop {
        let event = read(&mut socket).await;
        match event["event"].as_str() {
            Some("delta") => text.push_str(event["data"]["text"].as_str().unwrap_or_default()),
            Some("done") => break event,
            other => panic!("unexpected {other:?}: {event}"),
        }
    };
    assert_eq!(text, "websocket");
    assert_eq!(done["data"]["answer"]["text"], "websocket");

    send(
        json!({"op": "ask", "worker_name": "w", "prompt": "hi", "tier": "huge"}),
        &mut socket,
    )
    .await;
    let refused = read(&mut socket).await;
    assert_eq!(
        (
            refused["event"].as_str(),
            refused["data"]["error"]["field"].as_str()
        ),
        (Some("error"), Some("tier"))
    );
    send(
        json!({"op": "evaluateModel", "worker_name": "w"}),
        &mut socket,
    )
    .await;
    assert_eq!(read(&mut socket).await["data"]["error"]["field"], "op");

    rig.a.push(Reply::Stream(vec!["again".into()]));
    send(
        json!({"op": "ask", "worker_name": "w", "prompt": "hi"}),
        &mut socket,
    )
    .await;
    assert_eq!(read(&mut socket).await["event"], "delta");
    assert_eq!(read(&mut socket).await["event"], "done");
}

/// The next JSON text frame of a WebSocket.
pub(super) async fn read<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("a frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

pub(super) async fn send<S>(body: Value, socket: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::SinkExt;
    let text = tokio_tungstenite::tungstenite::Message::Text(body.to_string().into());
    socket.send(text).await.expect("send");
}
