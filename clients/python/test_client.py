"""The Python client against a running vibehq (VIBEHQ_URL): a worker's whole round.

Run by tests/it/client.rs; exits non-zero on the first failed check.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from vibehq_client import Client, Refused  # noqa: E402

vibehq = Client(os.environ["VIBEHQ_URL"], worker_name="factory-py", container_name="c1")

one = vibehq.submit({"task_type": "health_audit", "command": "audit", "priority": 5,
                     "worker_name": "factory-py"})
assert one.created, one
many = vibehq.submit_many([{"task_type": "report", "command": "report", "worker_name": "factory-py"}] * 2)
assert len(many) == 2 and all(s.created for s in many), many

claim = vibehq.claim(wait_ms=5000)
assert claim is not None and claim.task_id == one.task_id and claim.attempt == 1, claim
vibehq.start(claim)
vibehq.heartbeat(claim)
vibehq.progress(claim, percent=50, message="half way")
done = vibehq.complete(claim, output="all healthy")
row = vibehq.task(one.task_id, min_seq=done)
assert (row["status"], row["output"]) == ("completed", "all healthy"), row

second = vibehq.claim(wait_ms=5000)
outcome = vibehq.fail(second, "no data", retry=False)
assert outcome.retried is False, outcome
try:
    vibehq.complete(second)
    raise AssertionError("a result of a claim no longer held was accepted")
except Refused as refused:
    assert refused.status == 409, refused

vibehq.cancel(many[1].task_id, reason="not needed")
assert vibehq.claim(wait_ms=200) is None

try:
    vibehq.submit({"task_type": "x", "command": "rm -rf /"})
    raise AssertionError("a shell line was accepted as a command")
except Refused as refused:
    assert (refused.status, refused.field) == (422, "command"), refused

print("ok")
