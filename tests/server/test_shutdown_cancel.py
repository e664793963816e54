"""A reply still running when uvicorn's graceful-shutdown period ends is cancelled by uvicorn:
the client gets a 503 or a final error event, the server logs one line, and no traceback.
uvicorn runs in a thread on 127.0.0.1 with scripted models (the embedded model's SIGTERM case
is tests/server/test_shutdown.py)."""

import json
import logging
import threading
import time

import httpx
import pytest
import uvicorn

from smoa.server import create_app
from smoa.server.settings import ServerOptions
from smoa.testing import ScriptedBackend, free_port
from smoa.tracestore import MemoryStore

pytestmark = pytest.mark.server


@pytest.mark.parametrize("stream", [True, False])
def test_a_reply_cancelled_at_shutdown_ends_cleanly_with_one_log_line(stream, caplog):
    backend = ScriptedBackend(responder=lambda req: "too late", latency_s=60)  # still working at shutdown
    store = MemoryStore()
    # the stream starts at once (no hold for the first token), so the cancel finds it sending
    app = create_app(instances={"local": backend}, options=ServerOptions(stream_hold_s=0.05), store=store, warm_up=False)
    port = free_port()
    # log_config=None: uvicorn's records reach the root logger (and caplog) as they are
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           timeout_graceful_shutdown=0.5))
    thread = threading.Thread(target=server.run, daemon=True)
    got: dict = {}
    caplog.set_level(logging.INFO)

    def ask():
        body = {"model": "single", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        try:
            with httpx.Client(timeout=30) as c, c.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
                got["status"] = r.status_code
                got["lines"] = []
                for line in r.iter_lines():
                    got["lines"].append(line)
                    if line.startswith("data: ") and '"role"' in line:
                        got["started"] = True
        except httpx.HTTPError as e:
            got["error"] = f"{type(e).__name__}: {e}"

    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    client = threading.Thread(target=ask, daemon=True)
    client.start()
    deadline = time.monotonic() + 20
    while not (backend.in_flight and (got.get("started") or not stream)):  # the query is running
        assert time.monotonic() < deadline, f"the query never started: {got}"
        time.sleep(0.02)
    server.should_exit = True  # what SIGTERM does; then 0.5 s of grace, then the cancel
    thread.join(20)
    client.join(20)
    assert not thread.is_alive() and not client.is_alive()

    records = [r for r in caplog.records if r.name.startswith(("uvicorn", "smoa"))]
    tracebacks = [r for r in records if r.exc_info or "Exception in ASGI application" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert "Traceback" not in caplog.text, caplog.text
    ours = [r.getMessage() for r in records if r.name == "smoa.server" and "shutting down" in r.getMessage()]
    assert len(ours) == 1, [r.getMessage() for r in records]
    assert "error" not in got, got  # the client got a whole reply, not a cut connection
    if stream:
        assert got["status"] == 200
        data = [line[len("data: "):] for line in got["lines"] if line.startswith("data: ")]
        assert data[-1] == "[DONE]", data
        assert json.loads(data[-2])["error"]["code"] == "server_shutting_down", data
    else:
        assert got["status"] == 503
        assert json.loads("".join(got["lines"]))["error"]["code"] == "server_shutting_down"
    # the cancelled query's partial trace is kept
    assert any("cancelled" in (row["error"] or "") for row in store.recent(10)), store.recent(10)
