"""Values from an endpoint are checked where they enter (smoa.backends.upstream): impossible
token counts, ``content: null`` and redirects are one clear BackendError for that call, with
both HTTP clients, against a real server on 127.0.0.1 that lies (smoa.fakeserver); and an
eval through such a server finishes, and finishes again on rerun, with every item stored."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from smoa.backends import upstream
from smoa.backends.openai_backend import OpenAIBackend
from smoa.eval.runner import run_eval
from smoa.eval.store import ResultsStore
from smoa.testing import ServerProcess
from smoa.types import BackendError, Request

CLIENTS = ("aiohttp", "openai-sdk")
USAGE_LIES = {"huge-usage": r"usage.completion_tokens=10000000000000", "negative-usage": r"usage.completion_tokens=-5",
              "text-usage": r"usage.completion_tokens='lots'"}


# ------------------------------------------------------------------------------ pure rules
@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 10**30}, {"prompt_tokens": -1}, {"completion_tokens": "lots"},
    {"completion_tokens": 1.5}, {"completion_tokens": True}, {"prompt_tokens": float("inf")},
    {"prompt_tokens": [3]}, "many", 12,
])
def test_impossible_usage_is_one_clear_error(usage):
    with pytest.raises(BackendError, match="openai:x: the endpoint") as ei:
        upstream.usage_counts(usage, "openai:x")
    assert ei.value.retryable is False
    assert "\n" not in str(ei.value) and len(str(ei.value)) < 300


def test_sane_usage_passes():
    assert upstream.usage_counts(None, "w") == (0, 0)
    assert upstream.usage_counts({}, "w") == (0, 0)
    assert upstream.usage_counts({"prompt_tokens": 7, "completion_tokens": 12.0}, "w") == (7, 12)
    assert upstream.usage_counts({"prompt_tokens": upstream.MAX_TOKENS_PER_CALL}, "w")[0] == upstream.MAX_TOKENS_PER_CALL


def test_message_text():
    assert upstream.message_text({"content": "hi"}, "w") == "hi"
    assert upstream.message_text({"content": ""}, "w") == ""
    assert upstream.message_text({"content": [{"type": "text", "text": "a"}, {"x": 1}, {"text": 3}]}, "w") == "a"
    for msg, why in (({"content": None}, "content is null"), ({}, "content is null"),
                     ({"content": None, "refusal": "I won't."}, "refused: I won't."),
                     ({"content": None, "tool_calls": [{}]}, "tool calls"),
                     ({"content": 42}, "is a int, not text")):
        with pytest.raises(BackendError, match=why):
            upstream.message_text(msg, "w")
    with pytest.raises(BackendError, match="max_tokens was reached"):
        upstream.message_text({"content": None}, "w", "length")


def test_redirect_message_hides_the_query():
    e = upstream.redirect_error(302, {"location": "https://user:pw@other.example:8443/v1/x?token=SECRET"}, "w")
    assert "redirected (302) to https://other.example:8443/v1/x" in str(e)
    assert "SECRET" not in str(e) and "pw" not in str(e) and e.status_code == 302


# ------------------------------------------------------------------------- a lying server

@pytest.fixture(scope="module")
def liar():
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--fault-by-model"]) as srv:
        yield srv


def _req(model):
    return Request(messages=({"role": "user", "content": "What is 2+2?"},), model=model)


def _complete(be, request, stream=False):
    async def go():
        try:
            if not stream:
                return await be.complete(request)
            async for ev in be.stream(request):
                if ev.completion is not None:
                    return ev.completion
        finally:
            await be.aclose()
    return asyncio.run(go())


@pytest.mark.server
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("kind", "match"), [
    *USAGE_LIES.items(),
    ("null-content", r"no text"),
])
def test_lies_become_one_clear_error(liar, client, stream, kind, match):
    be = OpenAIBackend(base_url=liar.base_url, http_client=client, max_retries=0)
    with pytest.raises(BackendError, match=match) as ei:
        _complete(be, _req(kind), stream)
    msg = str(ei.value)
    assert msg.startswith(f"openai:{liar.base_url}") and "\n" not in msg and len(msg) < 300
    assert ei.value.retryable is False
    # the same server answers honest requests as before
    ok = _complete(OpenAIBackend(base_url=liar.base_url, http_client=client, max_retries=0), _req("m1"), stream)
    assert ok.text and ok.completion_tokens > 0


@pytest.mark.server
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("stream", [False, True])
def test_a_redirect_is_named_not_followed(liar, client, stream):
    be = OpenAIBackend(base_url=liar.base_url, http_client=client, max_retries=0)
    with pytest.raises(BackendError, match=r"redirected \(302\) to http://127.0.0.1:9/v1/chat/completions: "
                                           r"smoa does not follow redirects") as ei:
        _complete(be, _req("redirect"), stream)
    assert "sig=" not in str(ei.value) and ei.value.status_code == 302


# ------------------------------------------------------------------------------ the eval
def _data_dir() -> Path:
    d = Path(os.environ.get("SMOA_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
    if not (d / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found under {d}")
    return d


def _config(path: Path, base_url: str, models: list[str]) -> Path:
    blocks = [f'[backends.fake]\ntype = "openai"\nbase_url = "{base_url}"\nmax_retries = 0\n']
    for m in models:
        blocks.append(f'[pipelines.{m.replace("-", "_")}]\nmethod = "single"\n'
                      f'agent = {{ backend = "fake", model = "{m}" }}\n')
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


@pytest.mark.server
def test_an_eval_through_lying_values_finishes_and_reruns_with_every_item(liar, tmp_path):
    data = _data_dir()
    kinds = [*USAGE_LIES, "null-content", "redirect"]
    methods = [k.replace("-", "_") for k in kinds] + ["honest"]
    cfg = _config(tmp_path / "c.toml", liar.base_url, [*kinds, "honest"])
    out = tmp_path / "out"
    n = 3
    for attempt in (1, 2):  # the rerun meets the same lies and still finishes
        s = run_eval("gsm8k", methods, data=data, limit=n, out=out, config=cfg, progress=False, concurrency=4)
        assert s["errors"] == n * len(kinds), s
        assert s["ran"] == (n * len(methods) if attempt == 1 else n * len(kinds))
    with ResultsStore(out) as st:
        rows = list(st.rows(with_trace=True))
    assert len(rows) == n * len(methods)  # every (item, method) is accounted for
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    assert all(r["error"] is None and r["score"] is not None for r in by_method["honest"])
    for kind in kinds:
        got = by_method[kind.replace("-", "_")]
        assert len(got) == n
        for r in got:
            assert r["error"] and r["score"] is None, r
            assert r["prompt_tokens"] >= 0 and r["completion_tokens"] >= 0
            call_errors = [c["error"] for c in r["trace"]["calls"] if c.get("error")]
            assert call_errors and call_errors[0] in r["error"]  # the failed call is in the trace
