"""The upstream call streams only when someone reads the stream; cut streams are retried while
nothing was shown; token counts a stream lacks are estimated and marked (issue 14).

Against smoa.fakeserver on 127.0.0.1: `--fault-first 1` cuts exactly the first reply, so a
query is answered only if that call was retried; `--no-stream-usage` ends streams without a
usage chunk, as many servers do.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from smoa import resolve
from smoa.backends import upstream
from smoa.config import ConfigFile
from smoa.engine import Engine
from smoa.testing import ServerProcess

CLIENTS = ("aiohttp", "openai-sdk")


def server(*extra):
    return ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", *extra])


def pipe(url, method="single", client="aiohttp", n=1):
    cfg = ConfigFile(
        cache=False,
        backends={"fake": {"type": "openai", "base_url": url, "retries": 2, "timeout_s": 10.0, "backoff_s": 0.01,
                           "backoff_max_s": 0.05, "http_client": client}},
        pipelines={"p": {"method": method, "n": n, "max_rounds": 1, "seed": 3, "agent": {"backend": "fake", "model": "m1"}}},
    )
    return resolve(cfg)


def stats(srv):
    with urllib.request.urlopen(srv.root_url + "/stats", timeout=5) as r:
        return json.loads(r.read())


def run(p, on_delta=None):
    return asyncio.run(Engine(p, on_delta=on_delta).run("What is 2 + 2?"))


@pytest.mark.server
@pytest.mark.parametrize("client", CLIENTS)
def test_single_without_a_reader_does_not_stream_and_a_cut_reply_is_retried(client):
    # "truncate" cuts a stream after part of the text (never retried: the text went out) and
    # a plain reply mid-body; nobody reads a stream here, so the call is plain and retried
    with server("--faults", "truncate", "--fault-first", "1") as srv:
        r = run(pipe(srv.base_url, client=client))
        st = stats(srv)
    assert r.answer.strip()
    call = r.trace.calls[0]
    assert call.attempts == 2 and call.error is None and len(call.attempt_errors) == 1
    assert st["streams"] == 0 and st["requests"] == 2 and st["faults"] == {"truncate": 1}
    assert call.prompt_tokens > 0 and call.completion_tokens > 0 and call.estimated is False


@pytest.mark.server
@pytest.mark.parametrize("client", CLIENTS)
def test_a_stream_cut_before_any_text_is_retried(client):
    with server("--faults", "cut-early", "--fault-first", "1") as srv:
        pieces: list[str] = []
        r = run(pipe(srv.base_url, client=client), on_delta=pieces.append)
        st = stats(srv)
    assert r.answer.strip() and "".join(pieces) == r.answer
    assert r.trace.calls[0].attempts == 2 and st["streams"] == 2 and st["faults"] == {"cut-early": 1}


@pytest.mark.server
def test_a_stream_cut_after_text_is_one_clear_error():
    from smoa import BackendError

    with server("--faults", "truncate", "--fault-first", "1") as srv:
        pieces: list[str] = []
        with pytest.raises(BackendError, match="not retried"):
            run(pipe(srv.base_url), on_delta=pieces.append)
    assert pieces  # part of the answer had been shown: a retry would show it twice


@pytest.mark.server
@pytest.mark.parametrize("client", CLIENTS)
def test_streams_without_usage_give_estimated_tokens(client):
    with server("--no-stream-usage") as srv:
        single = run(pipe(srv.base_url, client=client), on_delta=lambda piece: None)
        moa = run(pipe(srv.base_url, method="moa", client=client, n=2), on_delta=lambda piece: None)
        plain = run(pipe(srv.base_url, client=client))
    call = single.trace.calls[0]
    assert call.estimated is True and call.prompt_tokens > 0 and call.completion_tokens > 0
    cost = single.cost
    assert cost["total"]["estimated"] is True and cost["by_stage"]["propose"]["estimated"] is True
    assert cost["total"]["total_tokens"] > 0
    # moa: the proposers are plain calls (counted by the server); the streamed aggregator is estimated
    agg = moa.trace.calls[-1]
    assert agg.stage == "aggregate" and agg.estimated is True and agg.completion_tokens > 0
    assert all(c.estimated is False for c in moa.trace.calls if c.stage == "propose")
    assert moa.cost["by_stage"]["aggregate"].get("estimated") is True
    assert "estimated" not in moa.cost["by_stage"]["propose"]
    # nobody reading: a plain call, whose usage the server reports
    assert plain.trace.calls[0].estimated is False and "estimated" not in plain.cost["total"]
    assert json.loads(single.trace.to_json())["calls"][0]["estimated"] is True


def test_stream_usage_rules():
    assert upstream.stream_usage({"prompt_tokens": 7, "completion_tokens": 3}, "p" * 40, "t" * 8, "w") == (7, 3, False)
    assert upstream.stream_usage(None, "p" * 40, "t" * 9, "w") == (10, 3, True)
    assert upstream.stream_usage({"prompt_tokens": 7}, "p" * 40, "t" * 8, "w") == (7, 2, True)
    assert upstream.stream_usage(None, "", "", "w") == (0, 0, True)
    assert upstream.estimate_tokens("a") == 1
    with pytest.raises(Exception, match="impossible token count"):
        upstream.stream_usage({"prompt_tokens": -1}, "p", "t", "w")
