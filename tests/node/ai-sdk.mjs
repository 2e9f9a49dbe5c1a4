// The Vercel AI SDK's OpenAI-compatible provider (from the npm registry, unmodified) against
// vibehq's /v1, as an application would use it. Run by tests/it/ai/openai.rs with
// VIBEHQ_BASE_URL (vibehq) and VIBEHQ_FAKE (the deterministic provider behind it, whose
// answers it scripts). Prints one JSON line per case; the Rust test checks them.
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { generateText, streamText, tool, stepCountIs, Output } from 'ai';
import { z } from 'zod';

const vibehq = createOpenAICompatible({
  name: 'vibehq',
  baseURL: `${process.env.VIBEHQ_BASE_URL}/v1`,
  apiKey: process.env.VIBEHQ_TOKEN ?? 'unused',
  headers: { 'x-vibehq-worker-name': 'ai-sdk-app', 'x-vibehq-container-name': 'web-1' },
  includeUsage: true,
  supportsStructuredOutputs: true,
});

async function script(...replies) {
  const response = await fetch(`${process.env.VIBEHQ_FAKE}/_script`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(replies),
  });
  if (!response.ok) throw new Error(`script: ${response.status}`);
}

const report = (name, seen) => console.log(JSON.stringify({ case: name, ...seen }));

await script({ text: 'Paris is the capital of France.' });
const chat = await generateText({
  model: vibehq('vibehq/small'),
  system: 'Answer in one sentence.',
  prompt: 'What is the capital of France?',
});
report('chat', { text: chat.text, finish: chat.finishReason, tokens: chat.usage.totalTokens });

await script({ text: 'one two three four' });
const stream = streamText({ model: vibehq('vibehq/auto'), prompt: 'Count to four.' });
const pieces = [];
for await (const piece of stream.textStream) pieces.push(piece);
report('stream', { pieces, finish: await stream.finishReason, tokens: (await stream.usage).totalTokens });

await script(
  { tool_call: { name: 'get_weather', arguments: { city: 'Paris' } } },
  { text: 'It is 18 C in Paris.' },
);
const calls = [];
const withTools = await generateText({
  model: vibehq('vibehq/medium'),
  prompt: 'What is the weather in Paris?',
  tools: {
    get_weather: tool({
      description: 'The weather in a city now.',
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => {
        calls.push(city);
        return `18 C in ${city}`;
      },
    }),
  },
  stopWhen: stepCountIs(3),
});
report('tools', { calls, text: withTools.text, steps: withTools.steps.length });

await script({ tool_call: { name: 'get_weather', arguments: { city: 'Oslo' } } }, { text: 'Cold in Oslo.' });
const streamedCalls = [];
const streamedTools = streamText({
  model: vibehq('vibehq/medium'),
  prompt: 'Weather in Oslo?',
  tools: {
    get_weather: tool({
      description: 'The weather in a city now.',
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => {
        streamedCalls.push(city);
        return `-2 C in ${city}`;
      },
    }),
  },
  stopWhen: stepCountIs(3),
});
let streamedText = '';
for await (const piece of streamedTools.textStream) streamedText += piece;
report('streamed_tools', { calls: streamedCalls, text: streamedText });

await script({ text: '{"city": "Paris", "celsius": 18}' });
const structured = await generateText({
  model: vibehq('vibehq/medium'),
  prompt: 'The weather in Paris as JSON.',
  output: Output.object({ schema: z.object({ city: z.string(), celsius: z.number() }) }),
});
report('json_schema', { output: structured.output });
