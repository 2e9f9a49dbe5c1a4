"""vibehq-client: what a worker or a service needs of a running vibehq, over its REST API.

    from vibehq_client import Client
    vibehq = Client("http://127.0.0.1:8080", worker_name="factory-1", container_name="c1")
    vibehq.submit({"task_type": "health_audit", "command": "audit"})
    claim = vibehq.claim(wait_ms=10_000)
    if claim:
        vibehq.start(claim)
        vibehq.complete(claim, output="ok")

Standard library only. Every call is one request, made as the worker (and container) the
client acts as, with the bearer token if one is given. A refusal raises `Refused` with the
server's status, code, message and the field at fault. Types mirror the API's JSON
(`/openapi.json`); tests/it/client.rs runs this client against a real vibehq.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

__all__ = ["Client", "Claim", "Submitted", "FailOutcome", "Refused"]


class Refused(Exception):
    """vibehq refused a request: `status`, `code`, `message` and the `field` at fault."""

    def __init__(self, status: int, code: str, message: str, field: Optional[str]):
        super().__init__(f"{status}: {message}" + (f" (field {field})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field


@dataclass(frozen=True)
class Submitted:
    task_id: str
    sequence: int
    created: bool


@dataclass(frozen=True)
class Claim:
    task_id: str
    task_type: str
    command: str
    parameters: Optional[Dict[str, Any]]
    priority: int
    attempt: int
    max_attempts: int
    lease_ms: int


@dataclass(frozen=True)
class FailOutcome:
    retried: bool
    backoff_ms: int
    sequence: int


def _pick(cls, data: Dict[str, Any]):
    return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


class Client:
    """A client of one vibehq, acting as one worker (and container)."""

    def __init__(
        self,
        base_url: str,
        worker_name: Optional[str] = None,
        container_name: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 60.0,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
        self.base = base_url.rstrip("/")
        self.worker_name, self.container_name = worker_name, container_name
        self.token, self.timeout = token, timeout

    def submit(self, task: Dict[str, Any]) -> Submitted:
        """Submits one task: `task_type` and `command` required, the rest as the API takes."""
        return _pick(Submitted, self._call("POST", "/api/tasks", self._submission(task)))

    def submit_many(self, tasks: List[Dict[str, Any]]) -> List[Submitted]:
        """Submits up to 1,000 tasks at once, all or nothing; answered in order."""
        answers = self._call("POST", "/api/tasks", [self._submission(t) for t in tasks])
        return [_pick(Submitted, a) for a in answers]

    def claim(self, wait_ms: int = 0) -> Optional[Claim]:
        """The next task this worker may take, waiting up to `wait_ms` for one; None if none."""
        answer = self._call("POST", "/api/tasks/claim", {**self._me(), "wait_ms": wait_ms})
        return None if answer is None else _pick(Claim, answer)

    def start(self, claim: Claim) -> int:
        return self._result(claim, "start", {})["sequence"]

    def heartbeat(self, claim: Claim) -> None:
        """Extends the lease; `Refused` (409) means the claim lost the task: stop working on it."""
        self._result(claim, "heartbeat", {})

    def progress(self, claim: Claim, percent: Optional[float] = None, message: Optional[str] = None) -> None:
        body = {k: v for k, v in (("percent", percent), ("message", message)) if v is not None}
        self._result(claim, "progress", body)

    def complete(self, claim: Claim, output: Optional[str] = None) -> int:
        return self._result(claim, "complete", {} if output is None else {"output": output})["sequence"]

    def fail(self, claim: Claim, error: str, retry: bool = True) -> FailOutcome:
        return _pick(FailOutcome, self._result(claim, "fail", {"error": error, "retry": retry}))

    def cancel(self, task_id: str, reason: Optional[str] = None) -> int:
        body = {} if reason is None else {"reason": reason}
        return self._call("POST", f"/api/tasks/{_segment(task_id)}/cancel", body)["sequence"]

    def task(self, task_id: str, min_seq: Optional[int] = None) -> Dict[str, Any]:
        """The task's row as the projection has it (once it applied `min_seq`, if given)."""
        query = "" if min_seq is None else f"?min_seq={min_seq}"
        return self._call("GET", f"/api/tasks/{_segment(task_id)}{query}")

    def _me(self) -> Dict[str, Any]:
        me = {}
        if self.worker_name:
            me["worker_name"] = self.worker_name
        if self.container_name:
            me["container_name"] = self.container_name
        return me

    def _submission(self, task: Dict[str, Any]) -> Dict[str, Any]:
        if self.worker_name and "submitted_by" not in task:
            return {**task, "submitted_by": self.worker_name}
        return dict(task)

    def _result(self, claim: Claim, what: str, body: Dict[str, Any]):
        body = {**body, **self._me(), "attempt": claim.attempt}
        return self._call("POST", f"/api/tasks/{_segment(claim.task_id)}/{what}", body)

    def _call(self, method: str, path: str, body: Any = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
                return json.loads(text) if response.status != 204 and text else None
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                detail = json.loads(text).get("error", {})
            except ValueError:
                detail = {}
            raise Refused(error.code, detail.get("code", "unknown"), detail.get("message", text),
                          detail.get("field")) from None


def _segment(text: str) -> str:
    return urllib.parse.quote(text, safe="")
