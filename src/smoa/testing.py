"""A scripted backend for tests: returns queued or computed replies and records every call.

    backend = ScriptedBackend()
    backend.enqueue("first reply", "second reply")
    ...
    assert [c.messages for c in backend.calls] == [...]
    backend.assert_complete()

A reply may be a string, a `Completion`, an exception instance (raised), or a callable
`f(request) -> str | Completion` that computes it. With nothing queued, `responder` (if
given) answers; otherwise the call fails loudly.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from .backends.base import Backend
from .types import Completion, Request

Reply = str | Completion | BaseException | Callable[[Request], "str | Completion"]


def count_words(text: str) -> int:
    return len(text.split())


class ScriptedBackend(Backend):
    kind = "scripted"

    def __init__(
        self,
        responder: Callable[[Request], str | Completion] | None = None,
        latency_s: float = 0.0,
        name: str = "scripted",
        max_concurrency: int | None = None,
        keep_calls: bool = True,
    ) -> None:
        self._queue: deque[Reply] = deque()
        self.keep_calls = keep_calls  # False: no call history (benchmarks with many calls)
        self.responder = responder
        self.latency_s = latency_s
        self.calls: list[Request] = []
        self.name = name
        self.max_concurrency = max_concurrency
        self.in_flight = 0
        self.max_in_flight = 0

    def enqueue(self, *replies: Reply) -> ScriptedBackend:
        self._queue.extend(replies)
        return self

    def assert_complete(self) -> None:
        if self._queue:
            raise AssertionError(f"{len(self._queue)} scripted replies were never used: {list(self._queue)!r}")

    def describe(self) -> str:
        return f"scripted:{self.name}"

    async def complete(self, request: Request) -> Completion:
        if self.keep_calls:
            self.calls.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if self._queue:
                reply: Any = self._queue.popleft()
            elif self.responder is not None:
                reply = self.responder
            else:
                raise AssertionError(f"ScriptedBackend {self.name!r} got an unscripted call: {request.messages!r}")
            if callable(reply) and not isinstance(reply, BaseException):
                reply = reply(request)
            if isinstance(reply, BaseException):
                raise reply
            if isinstance(reply, Completion):
                return reply
            prompt = " ".join(m["content"] for m in request.messages)
            return Completion(
                text=str(reply),
                prompt_tokens=count_words(prompt),
                completion_tokens=count_words(str(reply)),
                model=request.model,
                finish_reason="stop",
            )
        finally:
            self.in_flight -= 1


def stage_of(request: Request) -> str:
    """Which pipeline stage sent this request (for scripted responders)."""
    schema = request.json_schema or {}
    props = schema.get("properties", {})
    if "selected" in props:
        return "judge"
    if "stop" in props:
        return "moderate"
    if "roles" in props:
        return "role"
    if request.messages and is_aggregate_prompt(request.messages[-1]["content"]):
        return "aggregate"
    return "propose"


def is_aggregate_prompt(text: str) -> bool:
    """Whether a message is the aggregator's (its task, after the answers, asks for the final reply)."""
    return "\n## Your task\nWrite the final reply" in text


def mixture_responder(
    propose: Callable[[Request], str] | str = "proposal",
    judge: Callable[[Request], str] | str | None = None,
    moderate: Callable[[Request], str] | str = '{"reasoning": "go on", "stop": false}',
    aggregate: Callable[[Request], str] | str = "final answer",
    roles: Callable[[Request], str] | str | None = None,
) -> Callable[[Request], str]:
    """A responder that answers each stage plausibly; override any stage with a string or function.

    Default judge: picks the first k labels it was shown, and where its verdict also holds the
    stop decision (smoa's one-call verdict) says go on, as the default moderator does.
    Default roles: n distinct roles.
    """
    import json as _json

    def default_judge(req: Request) -> str:
        props = req.json_schema["properties"]  # type: ignore[index]
        out: dict[str, Any] = {"reasoning": "first k", "selected": list(range(1, props["selected"]["minItems"] + 1))}
        if "stop" in props:
            out["stop"] = False
        return _json.dumps(out)

    def default_roles(req: Request) -> str:
        n = req.json_schema["properties"]["roles"]["minItems"]  # type: ignore[index]
        return _json.dumps({"roles": [{"name": f"r{i}", "description": f"You are scripted expert {i}."} for i in range(1, n + 1)]})

    table = {"propose": propose, "judge": judge or default_judge, "moderate": moderate, "aggregate": aggregate, "role": roles or default_roles}

    def respond(req: Request) -> str:
        r = table[stage_of(req)]
        return r(req) if callable(r) else r

    return respond


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server started as a real subprocess on 127.0.0.1, stopped on exit.

        with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as srv:
            srv.base_url  # http://127.0.0.1:PORT/v1
    """

    def __init__(self, argv: list[str], ready_path: str = "/v1/models", timeout_s: float = 120.0, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.ready_path = ready_path
        self.timeout_s = timeout_s
        self.env = env
        self.proc: Any = None
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.root_url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        import os
        import subprocess
        import sys
        import tempfile
        import time
        import urllib.request

        argv = [sys.executable if a == "python" else a for a in self.argv]
        self._log = tempfile.TemporaryFile()
        env = dict(os.environ)
        env.update(self.env or {})
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(self.root_url + self.ready_path, timeout=2) as r:
                    if r.status < 500:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"server did not start in {self.timeout_s} s: {self.log()[-2000:]}")

    def log(self) -> str:
        """What the server printed (kept after it stopped)."""
        if self._log.closed:
            return self._final_log
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:  # keep the text, close the file (no ResourceWarning)
            self._final_log = self.log()
            self._log.close()
