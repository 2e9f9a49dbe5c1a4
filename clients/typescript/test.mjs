// The TypeScript client against a running vibehq (VIBEHQ_URL): a worker's whole round and the
// live feed. Run by tests/it/client.rs; exits non-zero on the first failed check.
import assert from 'node:assert/strict';
import { Client, Refused } from './index.js';

const vibehq = new Client(process.env.VIBEHQ_URL, { workerName: 'factory-ts', containerName: 'c1' });
const seen = [];
const stop = await vibehq.watch({ worker_name: 'factory-ts' }, (event) => seen.push(event));

const one = await vibehq.submit({ task_type: 'health_audit', command: 'audit', priority: 5, worker_name: 'factory-ts' });
assert.equal(one.created, true);
const many = await vibehq.submitMany([1, 2].map(() => ({ task_type: 'report', command: 'report', worker_name: 'factory-ts' })));
assert.equal(many.length, 2);

const claim = await vibehq.claim(5000);
assert.equal(claim.task_id, one.task_id);
await vibehq.start(claim);
await vibehq.heartbeat(claim);
await vibehq.progress(claim, 50, 'half way');
const done = await vibehq.complete(claim, 'all healthy');
const row = await vibehq.task(one.task_id, done);
assert.deepEqual([row.status, row.output], ['completed', 'all healthy']);

const second = await vibehq.claim(5000);
assert.equal((await vibehq.fail(second, 'no data', false)).retried, false);
await assert.rejects(vibehq.complete(second), (e) => e instanceof Refused && e.status === 409);
await vibehq.cancel(many[1].task_id, 'not needed');
assert.equal(await vibehq.claim(200), null);
await assert.rejects(
  vibehq.submit({ task_type: 'x', command: 'rm -rf /' }),
  (e) => e instanceof Refused && e.status === 422 && e.field === 'command',
);

const deadline = Date.now() + 5000;
while (!seen.some((e) => e.task_id === one.task_id && e.type === 'task.completed') && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
stop();
assert.deepEqual(
  seen.filter((e) => e.task_id === one.task_id).map((e) => e.type),
  ['task.submitted', 'task.assigned', 'task.started', 'task.progress', 'task.completed'],
);
console.log('ok');
