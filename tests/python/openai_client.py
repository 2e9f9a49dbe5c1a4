"""The unmodified `openai` package against vibehq's /v1, as an application would use it.

Run by tests/it/ai/openai.rs with OPENAI_BASE_URL pointing at vibehq and VIBEHQ_FAKE at the
deterministic provider behind it (whose answers it scripts). Prints one JSON line per case
with what the client saw; the Rust test checks it and the recorded calls.
"""

import json
import os
import urllib.request

from openai import OpenAI

client = OpenAI(
    base_url=os.environ["OPENAI_BASE_URL"],
    api_key=os.environ.get("OPENAI_API_KEY", "unused"),
    default_headers={"x-vibehq-worker-name": "acme-fixer", "x-vibehq-container-name": "c1"},
)


def script(*replies):
    request = urllib.request.Request(
        os.environ["VIBEHQ_FAKE"] + "/_script",
        data=json.dumps(list(replies)).encode(),
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(request).read()


def report(case, **seen):
    print(json.dumps({"case": case, **seen}), flush=True)


models = [m.id for m in client.models.list()]
report("models", ids=models)

script({"text": "Paris is the capital of France."})
chat = client.chat.completions.create(
    model="vibehq/small",
    messages=[
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    temperature=0.2,
    max_tokens=50,
)
report(
    "chat",
    content=chat.choices[0].message.content,
    finish=chat.choices[0].finish_reason,
    total_tokens=chat.usage.total_tokens,
    model=chat.model,
)

script({"text": "one two three four"})
stream = client.chat.completions.create(
    model="vibehq/auto",
    messages=[{"role": "user", "content": "Count to four."}],
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.total_tokens
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
report("stream", pieces=pieces, finish=finish, total_tokens=usage)

weather = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
script({"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
       {"text": "It is 18 C in Paris."})
messages = [{"role": "user", "content": "What is the weather in Paris?"}]
first = client.chat.completions.create(model="vibehq/medium", messages=messages, tools=[weather])
call = first.choices[0].message.tool_calls[0]
messages.append(first.choices[0].message.model_dump(exclude_none=True))
messages.append({"role": "tool", "tool_call_id": call.id, "content": "18 C"})
second = client.chat.completions.create(model="vibehq/medium", messages=messages, tools=[weather])
report(
    "tools",
    finish=first.choices[0].finish_reason,
    name=call.function.name,
    arguments=json.loads(call.function.arguments),
    answer=second.choices[0].message.content,
)

script({"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}})
stream = client.chat.completions.create(
    model="vibehq/medium",
    messages=[{"role": "user", "content": "Weather in Oslo?"}],
    tools=[weather],
    stream=True,
)
name, arguments, finish = None, "", None
for chunk in stream:
    for choice in chunk.choices:
        for call in choice.delta.tool_calls or []:
            name = call.function.name or name
            arguments += call.function.arguments or ""
        finish = choice.finish_reason or finish
report("streamed_tools", name=name, arguments=json.loads(arguments), finish=finish)

script({"text": '{"city": "Paris", "celsius": 18}'})
answer = client.chat.completions.create(
    model="vibehq/medium",
    messages=[{"role": "user", "content": "The weather in Paris as JSON."}],
    response_format={
        "type": "json_schema",
        "json_schema": {
            "name": "weather",
            "schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
                "required": ["city", "celsius"],
            },
        },
    },
)
report("json_schema", content=json.loads(answer.choices[0].message.content))

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    report("unknown_model", status=None)
except Exception as error:  # the SDK's NotFoundError
    report("unknown_model", status=getattr(error, "status_code", None),
           param=error.body.get("param") if isinstance(error.body, dict) else None)
