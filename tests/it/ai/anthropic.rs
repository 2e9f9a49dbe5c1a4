//! Anthropic providers, reached by configuration.

use super::*;

#[tokio::test]
async fn an_anthropic_provider_is_reached_by_configuration_and_falls_back_like_any_other() {
    let live = Live::start().await;
    let (claude, openai) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    let anthropic = ProviderConfig {
        kind: ProviderKind::Anthropic,
        ..provider("claude", &claude)
    };
    let gateway = Gateway::new(
        GatewayConfig {
            providers: vec![anthropic, provider("openai", &openai)],
            ..GatewayConfig::default()
        },
        live.log.clone(),
    )
    .expect("gateway");
    let caller = vibehq_ai::Actor::new("w", None);
    let conversation = vibehq_ai::Conversation::prompt("hi").system("be brief");
    let request = vibehq_ai::Request {
        caller: &caller,
        operation: vibehq_ai::Operation::Ask,
        tier: vibehq_ai::Tier::Medium,
        provider: None,
        conversation: &conversation,
        timeout: None,
    };

    claude.push(text("Hello from the Messages API."));
    let reply = gateway.complete(request).await.expect("an answer");
    assert_eq!(
        (reply.provider.as_str(), reply.answer.text.as_str()),
        ("claude", "Hello from the Messages API.")
    );
    assert_eq!(reply.answer.usage.output_tokens, Some(5));
    let sent = &claude.requests()[0];
    assert_eq!(
        (sent["model"].as_str(), sent["system"].is_null()),
        (Some("model-claude"), false),
        "{sent}"
    );

    claude.push(Reply::rate_limited(60));
    openai.push(text("from openai"));
    let reply = gateway.complete(request).await.expect("an answer");
    assert_eq!((reply.provider.as_str(), reply.attempts), ("openai", 2));
}
