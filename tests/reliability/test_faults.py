"""Fault injection over real HTTP: 300 smoa queries against a server where 20% of calls fail.

Every query must end in an answer or one clear error (a SmoaError with a one-line
message), within its deadline; nothing may hang or escape as another exception. With
faults only on some proposers' models, every query must be answered.
"""

import asyncio
import json
import re
import time
import urllib.request
from collections import Counter

import pytest

from smoa import SmoaError, resolve
from smoa.config import ConfigFile
from smoa.engine import Engine
from smoa.testing import ServerProcess

pytestmark = pytest.mark.server

QUERIES = 300
CONCURRENCY = 32
DEADLINE_S = 30.0


def server(*extra, hang_s=4.0):
    # a "timeout" fault hangs past the client's timeout_s; not much longer, since the
    # server waits for hanging requests when it shuts down
    return ServerProcess(
        ["python", "-m", "smoa.fakeserver", "--port", "{port}", "--latency", "0", "--hang", str(hang_s),
         "--retry-after", "0.05", "--seed", "11", *extra]
    )


def config(url, proposers=("m1", "m1", "m1"), boss="m1", retries=3, timeout_s=2.0):
    # n = 3, k = 2, one round: role (then cached), 3 proposers, judge, aggregator. Small, so
    # that 300 queries fit in well under a minute on a 2-core machine that is busy.
    return ConfigFile(
        cache=False,
        backends={"fake": {"type": "openai", "base_url": url, "retries": retries, "timeout_s": timeout_s,
                           "backoff_s": 0.05, "backoff_max_s": 0.4}},
        pipelines={"p": {
            "method": "smoa", "n": len(proposers), "k": 2, "max_rounds": 1, "seed": 5, "deadline_s": DEADLINE_S,
            "agent": {"backend": "fake", "model": boss},
            "proposers": [{"backend": "fake", "model": m} for m in proposers],
        }},
    )


async def run_all(pipe, count):
    """Run `count` queries, `CONCURRENCY` at a time; every outcome is classified, none raised."""
    gate = asyncio.Semaphore(CONCURRENCY)
    outcomes: list[tuple[str, object, float]] = []

    async def one(i):
        async with gate:
            t0 = time.monotonic()
            deltas = []
            eng = Engine(pipe, on_delta=deltas.append if i % 3 == 0 else None)  # a third stream their answer
            try:
                r = await eng.run(f"Question number {i}: what is {i} + {i}?")
                kind, value = ("answer", r) if r.answer.strip() else ("empty", r)
            except SmoaError as e:
                kind, value = "error", e
            except Exception as e:  # anything else is a crash of the library
                kind, value = "crash", e
            outcomes.append((kind, value, time.monotonic() - t0))

    async with asyncio.timeout(DEADLINE_S + 60):  # the test itself cannot hang
        await asyncio.gather(*(one(i) for i in range(count)))
    return outcomes


def stats(srv):
    with urllib.request.urlopen(srv.root_url + "/stats") as r:
        return json.load(r)


def summarize(outcomes):
    kinds = Counter(k for k, _, _ in outcomes)
    # the kind of each error: its text without the endpoint's address
    errors = Counter(re.sub(r"http://127\.0\.0\.1:\d+/v1", "URL", str(v))[:160] for k, v, _ in outcomes if k == "error")
    retries = sum(r.trace.health()["retries"] for k, r, _ in outcomes if k == "answer")
    dropped = sum(len(r.trace.health()["dropped_proposers"]) for k, r, _ in outcomes if k == "answer")
    judge_fb = sum(len(r.trace.health()["verdict_fallbacks"]) for k, r, _ in outcomes if k == "answer")
    slowest = max(t for _, _, t in outcomes)
    return kinds, errors, retries, dropped, judge_fb, slowest


def test_300_queries_at_20_percent_faults_all_end_cleanly(capsys):
    with server("--fault-rate", "0.2") as srv:
        pipe = resolve(config(srv.base_url))
        t0 = time.monotonic()
        outcomes = asyncio.run(run_all(pipe, QUERIES))
        wall = time.monotonic() - t0
        st = stats(srv)
    kinds, errors, retries, dropped, judge_fb, slowest = summarize(outcomes)
    with capsys.disabled():
        print(
            f"\n[faults 20%] {QUERIES} queries in {wall:.1f} s: answered {kinds['answer']}, clear errors {kinds['error']}, "
            f"crashes {kinds['crash']}, empty {kinds['empty']}; retries {retries}, proposers dropped {dropped}, "
            f"judge/moderator fallbacks {judge_fb}; slowest query {slowest:.1f} s; server: {st['requests']} requests, "
            f"faults {st['faults']}; errors {dict(errors)}"
        )
    assert len(outcomes) == QUERIES
    assert kinds["crash"] == 0, [repr(v) for k, v, _ in outcomes if k == "crash"][:3]
    assert kinds["answer"] + kinds["error"] == QUERIES
    for k, v, _ in outcomes:
        if k == "error":
            msg = str(v)
            assert msg and "\n" not in msg and "Traceback" not in msg
    assert slowest < DEADLINE_S + 5  # bounded by the deadline
    # faults really happened, of every kind, and the retries absorbed most of them
    assert set(st["faults"]) == {"500", "429", "timeout", "malformed", "truncate"}
    assert sum(st["faults"].values()) > 0.15 * st["requests"]
    assert retries > 0
    assert kinds["answer"] >= 0.9 * QUERIES


def test_faults_only_on_some_proposers_every_query_is_answered(capsys):
    with server("--fault-rate", "0.5", "--fault-models", "m2,m3", hang_s=7.0) as srv:
        # m1 is reliable; a slow machine must not make it look faulty, hence the longer timeout
        pipe = resolve(config(srv.base_url, proposers=("m1", "m2", "m3"), boss="m1", retries=1, timeout_s=5.0))
        t0 = time.monotonic()
        outcomes = asyncio.run(run_all(pipe, QUERIES))
        wall = time.monotonic() - t0
        st = stats(srv)
    kinds, errors, retries, dropped, judge_fb, slowest = summarize(outcomes)
    with capsys.disabled():
        print(
            f"\n[faults on m2,m3 at 50%] {QUERIES} queries in {wall:.1f} s: answered {kinds['answer']}, "
            f"errors {kinds['error']}, crashes {kinds['crash']}; retries {retries}, proposers dropped {dropped}; "
            f"server faults {st['faults']}"
        )
    assert kinds["answer"] == QUERIES, dict(errors)
    assert dropped > 0  # some proposers did fail for good, and the queries went on without them
    for _, r, _ in outcomes:
        for lay in r.trace.layers:
            for p in lay["proposals"]:
                if not p["ok"]:
                    assert p["model"] in ("m2", "m3")
