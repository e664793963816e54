"""Queueing over max_in_flight, freeing a gone client's slot, and CORS (issue 12 items 4, 5)."""

import concurrent.futures as cf
import json
import time

import httpx
import openai
import pytest

from smoa.server.settings import resolve_options
from smoa.testing import ScriptedBackend, mixture_responder
from smoa.types import ConfigError

pytestmark = pytest.mark.server

WEB = httpx.Client(timeout=30)
HI = [{"role": "user", "content": "hi"}]


def client(srv, retries=0):
    return openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=retries, timeout=60)


def health(srv):
    return WEB.get(f"{srv.root}/health").json()


def wait_for(cond, what, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def post(srv, timeout=30.0, **body):
    return httpx.post(f"{srv.base_url}/chat/completions", json={"model": "single", "messages": HI, **body}, timeout=timeout)


def test_sixteen_concurrent_sdk_calls_against_two_slots_all_succeed(make_server):
    be = ScriptedBackend(responder=mixture_responder(), latency_s=0.1)
    srv = make_server(backend=be, max_in_flight=2)
    c = client(srv)  # no SDK retries: every request must be answered 200 the first time

    def ask(i):
        return c.chat.completions.create(model="single", messages=[{"role": "user", "content": f"q{i}"}])

    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, range(16)))
    assert [r.choices[0].message.content for r in results] == ["proposal"] * 16
    assert be.max_in_flight <= 2 and len(be.calls) == 16
    assert health(srv)["in_flight"] == 0 and health(srv)["queued"] == 0


def test_full_queue_is_429_with_retry_after(make_server):
    be = ScriptedBackend(responder=mixture_responder(), latency_s=0.8)
    srv = make_server(backend=be, max_in_flight=1, max_queue=1)
    with cf.ThreadPoolExecutor(2) as pool:
        running = pool.submit(post, srv)
        wait_for(lambda: health(srv)["in_flight"] == 1, "the first query never started")
        queued = pool.submit(post, srv)
        wait_for(lambda: health(srv)["queued"] == 1, "the second query never queued")
        r = post(srv)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert running.result().status_code == 200 and queued.result().status_code == 200


def test_queue_timeout_is_429_with_retry_after(make_server):
    be = ScriptedBackend(responder=mixture_responder(), latency_s=1.5)
    srv = make_server(backend=be, max_in_flight=1, queue_timeout_s=0.2)
    with cf.ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, srv)
        wait_for(lambda: health(srv)["in_flight"] == 1, "the first query never started")
        t0 = time.monotonic()
        r = post(srv)
        assert r.status_code == 429 and "within 0.2 s" in r.json()["error"]["message"]
        assert int(r.headers["retry-after"]) >= 1 and time.monotonic() - t0 < 1.4
        assert health(srv)["queued"] == 0
        assert running.result().status_code == 200


def test_client_that_leaves_a_whole_reply_frees_its_slot_and_stops_its_mixture(make_server):
    be = ScriptedBackend(responder=mixture_responder(), latency_s=0.4)
    srv = make_server(backend=be, max_in_flight=1)
    with pytest.raises(httpx.ReadTimeout):
        post(srv, timeout=0.6, model="moa", smoa={"n": 3, "max_rounds": 8})
    # the whole mixture would take 9 * 0.4 s: its slot must be free long before
    wait_for(lambda: health(srv)["in_flight"] == 0, "the abandoned query still holds its slot", 1.0)
    calls = len(be.calls)
    time.sleep(1.0)
    assert len(be.calls) == calls  # the mixture was cancelled, not left to run
    assert post(srv).status_code == 200


def test_client_that_leaves_the_queue_frees_its_place(make_server):
    be = ScriptedBackend(responder=mixture_responder(), latency_s=1.0)
    srv = make_server(backend=be, max_in_flight=1, max_queue=1)
    with cf.ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, srv)
        wait_for(lambda: health(srv)["in_flight"] == 1, "the first query never started")
        with pytest.raises(httpx.ReadTimeout):
            post(srv, timeout=0.3)
        wait_for(lambda: health(srv)["queued"] == 0, "the gone client still holds its place in the queue", 2.0)
        assert running.result().status_code == 200
    assert len(be.calls) == 1  # the gone client's query never ran


def test_cors_is_off_by_default(make_server):
    srv = make_server()
    r = WEB.options(f"{srv.base_url}/chat/completions",
                    headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_preflight_and_request(make_server):
    srv = make_server(cors_origins=("https://app.example",))
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    r = WEB.options(f"{srv.base_url}/chat/completions", headers=pre)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    bad = WEB.options(f"{srv.base_url}/chat/completions", headers={**pre, "Origin": "https://evil.example"})
    assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
    r = WEB.post(f"{srv.base_url}/chat/completions", headers={"Origin": "https://app.example"},
                 content=json.dumps({"model": "single", "messages": HI}))
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-smoa-trace-id" in r.headers["access-control-expose-headers"].lower()


def test_cors_origin_must_be_an_origin():
    with pytest.raises(ConfigError, match="not an origin"):
        resolve_options(cors_origins=("https://app.example/path",))
    assert resolve_options(cors_origins=("*",)).cors_origins == ("*",)


def test_stream_client_that_leaves_before_the_first_token_frees_its_slot(make_server):
    # the reply waits for the first answer token (stream_hold_s) before it starts: a client
    # leaving in that time must still free its slot at once
    be = ScriptedBackend(responder=mixture_responder(), latency_s=0.4)
    srv = make_server(backend=be, max_in_flight=1)
    with pytest.raises(httpx.ReadTimeout):
        post(srv, timeout=0.6, model="moa", stream=True, smoa={"n": 3, "max_rounds": 8})
    wait_for(lambda: health(srv)["in_flight"] == 0, "the abandoned stream still holds its slot", 1.0)
    calls = len(be.calls)
    time.sleep(1.0)
    assert len(be.calls) == calls
