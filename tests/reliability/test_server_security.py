"""The server's security properties, from outside: 401 for missing or wrong keys with a
constant-time comparison, 413 for big bodies, and its key in no log line or response.

(tests/server/test_app.py covers the same routes for function; the in-flight limit, 429
with Retry-After, is tested there in test_in_flight_limit_is_429.)
"""

import hmac
import logging

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install -e '.[server]'")

import httpx  # noqa: E402

from smoa.server import create_app  # noqa: E402
from smoa.server.settings import ServerOptions  # noqa: E402
from smoa.server.testing import ThreadServer  # noqa: E402
from smoa.testing import ScriptedBackend, mixture_responder  # noqa: E402
from smoa.tracestore import TraceStore  # noqa: E402

KEY = "srv-key-9d8c7b6a5f4e3d2c1b0a"
CHAT = {"model": "single", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def server(tmp_path, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    grab = Grab(level=logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(grab)
    root.setLevel(logging.DEBUG)
    app = create_app(None, ServerOptions(api_key=KEY, max_request_bytes=2048),
                     instances={"local": ScriptedBackend(responder=mixture_responder())},
                     store=TraceStore(tmp_path / "traces.sqlite"), warm_up=False)
    access = logging.getLogger("uvicorn.access")  # the access log line carries URLs (?key=...)
    try:
        with ThreadServer(app) as srv:
            access.setLevel(logging.INFO)
            access.addHandler(grab)
            srv.compare_calls = calls
            srv.records = records
            srv.store_path = tmp_path / "traces.sqlite"
            yield srv
    finally:
        access.removeHandler(grab)
        root.removeHandler(grab)
        root.setLevel(old)


def test_keys_401_413_and_no_key_in_logs_or_responses(server):
    base = server.root
    bodies = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {KEY[:-1]}"},
                        {"Authorization": f"Bearer {KEY}x"}, {"Authorization": KEY}):
            r = c.post("/v1/chat/completions", json=CHAT, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
            bodies.append(r.text)
        ok = c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        bodies.append(ok.text)
        big = c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]})
        assert big.status_code == 413
        page = c.get("/traces", params={"key": KEY})  # the page login puts the key in a URL once
        assert page.status_code in (200, 303)
    # every key check went through hmac.compare_digest (constant time), never ==
    assert len(server.compare_calls) >= 5
    for text in bodies + server.records:
        assert KEY not in text, text
    assert KEY.encode() not in server.store_path.read_bytes()
