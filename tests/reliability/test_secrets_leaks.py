"""No run of 8 or more characters of any secret leaves the process (issue 14).

Three ways a secret reaches smoa's outputs, each tried through the CLI (plain and --json),
an eval store and `smoa serve` (replies, streams, trace pages, its log):
- an upstream error that echoes the key late in a long message (it used to be cut to 300
  characters and only then masked, so its first part leaked);
- a password in `base_url` (`http://user:PASS@host/v1`);
- a model answer that contains the key and the password (streamed, split across chunks).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from smoa.redaction import (
    RUN,
    StreamRedactor,
    clip,
    redact,
    redact_output,
    register_secret,
    register_url,
)
from smoa.testing import ServerProcess

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-leak-test-7d3f9a1c5e8b2f4a6c0e9d7b5a3f1e8c"
PASS = "pw-Quartz-Lantern-93x7-Meridian"

UPSTREAM = textwrap.dedent('''
    import base64, json, sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    KEY, PASS = sys.argv[2], sys.argv[3]
    LEAK = f"Here you are: the key is {KEY} and the password is {PASS}. Done."

    async def chat(request):
        body = await request.json()
        auth = request.headers.get("authorization", "")
        if auth not in (f"Bearer {KEY}", "Basic " + base64.b64encode(f"alice:{PASS}".encode()).decode()):
            return JSONResponse({"error": {"message": "who are you?"}}, status_code=401)
        if body["model"] == "late":
            msg = "upstream trouble " + "x" * 400 + " with the key " + request.headers.get("authorization", "")
            return JSONResponse({"error": {"message": msg}}, status_code=500)
        usage = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
        if body.get("stream"):
            async def gen():
                for i in range(0, len(LEAK), 5):  # every secret split across chunks
                    d = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "leak",
                         "choices": [{"index": 0, "delta": {"content": LEAK[i:i + 5]}, "finish_reason": None}]}
                    yield f"data: {json.dumps(d)}\\n\\n"
                d = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "leak",
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}
                yield f"data: {json.dumps(d)}\\n\\ndata: [DONE]\\n\\n"
            return StreamingResponse(gen(), media_type="text/event-stream")
        return JSONResponse({"id": "c", "object": "chat.completion", "created": 0, "model": "leak",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": LEAK},
                                          "finish_reason": "stop"}], "usage": usage})

    async def models(request):
        return JSONResponse({"data": []})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
''')


def windows(secret):
    return {secret[i : i + RUN] for i in range(len(secret) - RUN + 1)}


def assert_clean(written):
    for where, data in written.items():
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        for secret in (KEY, PASS):
            bad = [w for w in windows(secret) if w in text]
            assert not bad, f"{len(bad)} runs of {RUN} characters of a secret leaked into {where}: {bad[:2]}"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    script = tmp_path_factory.mktemp("up") / "upstream.py"
    script.write_text(UPSTREAM)
    with ServerProcess(["python", str(script), "{port}", KEY, PASS]) as srv:
        yield srv


def config(upstream):
    port = upstream.base_url.split(":")[-1].split("/")[0]
    return textwrap.dedent(f'''
        [backends.hosted]
        type = "openai"
        base_url = "http://alice:{PASS}@127.0.0.1:{port}/v1"
        max_retries = 0

        [backends.keyed]
        type = "openai"
        base_url = "http://127.0.0.1:{port}/v1"
        api_key_env = "LEAK_TEST_KEY"
        max_retries = 0

        [pipelines.leak]
        method = "single"
        agent = {{ backend = "keyed", model = "leak" }}

        [pipelines.late]
        method = "single"
        agent = {{ backend = "keyed", model = "late" }}

        [pipelines.mix]
        method = "moa"
        n = 2
        max_rounds = 1
        agent = {{ backend = "hosted", model = "leak" }}
        proposers = [{{ backend = "hosted", model = "leak" }}, {{ backend = "keyed", model = "leak" }}]
    ''')


def env_for(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LEAK_TEST_KEY": KEY,
           "SMOA_TRACE_STORE": str(tmp_path / "traces.sqlite"), "SMOA_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("SMOA_NO_TRACE_STORE", None)
    env.pop("SMOA_RAW_OUTPUT", None)
    return env


def files_under(tmp_path, written):
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.name != "smoa.toml":
            written[str(f)] = f.read_bytes()


def test_unit_rules():
    register_secret(KEY)
    register_url(f"http://alice:{PASS}@h/v1")
    late = "x" * 290 + KEY  # cut at 300 before masking, 10 characters of the key would stay
    assert KEY[:10] not in clip(late)
    assert redact(f"echo {KEY[5:25]} end") == "echo [redacted] end"  # a copied part of the key
    assert redact("see http://bob:hunter2-long-pass@host/v1") == "see http://bob:[redacted]@host/v1"
    assert PASS not in redact(f"password {PASS}")
    assert redact_output("an answer with no secret") == "an answer with no secret"
    text = f"the key is {KEY}, the password is {PASS}."
    for size in (1, 3, 7, 50):
        sr = StreamRedactor()
        out = "".join(sr.feed(text[i : i + size]) for i in range(0, len(text), size)) + sr.flush()
        assert out == "the key is [redacted], the password is [redacted]."


def test_unit_opt_out(monkeypatch):
    register_secret(KEY)
    monkeypatch.setenv("SMOA_RAW_OUTPUT", "1")
    assert redact_output(f"k={KEY}") == f"k={KEY}"


@pytest.mark.parametrize("pipeline", ["leak", "mix"])
def test_cli_answers_and_errors_hold_no_secret(upstream, tmp_path, pipeline):
    cfg = tmp_path / "smoa.toml"
    cfg.write_text(config(upstream))
    env = env_for(tmp_path)
    written = {}
    for args, rc in ((["--json", "--trace", str(tmp_path / "t.json")], 0), ([], 0)):
        p = subprocess.run([sys.executable, "-m", "smoa", "ask", "Say it.", "-c", str(cfg), "--pipeline", pipeline, *args],
                           capture_output=True, timeout=120, env=env)
        assert p.returncode == rc, p.stderr.decode()
        written[f"stdout {args}"], written[f"stderr {args}"] = p.stdout, p.stderr
    assert "[redacted]" in json.loads(written["stdout " + str(["--json", "--trace", str(tmp_path / "t.json")])])["answer"]
    p = subprocess.run([sys.executable, "-m", "smoa", "ask", "Say it.", "-c", str(cfg), "--pipeline", "late"],
                       capture_output=True, timeout=120, env=env)
    assert p.returncode != 0 and b"upstream trouble" in p.stderr
    written["late stderr"], written["late stdout"] = p.stderr, p.stdout
    files_under(tmp_path, written)
    assert_clean(written)


def test_eval_store_holds_no_secret(upstream, tmp_path):
    data = ROOT.parent / "shared" / "data"
    if not (data / "gsm8k").is_dir():
        pytest.skip(f"GSM8K data not found under {data}")
    cfg = tmp_path / "smoa.toml"
    cfg.write_text(config(upstream))
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "smoa", "eval", "--benchmark", "gsm8k", "--methods", "leak,late",
                        "--config", str(cfg), "--data", str(data), "--limit", "2", "--out", str(out)],
                       capture_output=True, timeout=300, env=env_for(tmp_path))
    written = {"stdout": p.stdout, "stderr": p.stderr}
    files_under(tmp_path, written)
    assert any("results.sqlite" in w for w in written)
    assert_clean(written)


def test_server_replies_streams_pages_and_log_hold_no_secret(upstream, tmp_path):
    cfg = tmp_path / "smoa.toml"
    cfg.write_text(config(upstream))
    env = env_for(tmp_path)
    written = {}
    argv = ["python", "-m", "smoa", "serve", "--config", str(cfg), "--port", "{port}", "--log-level", "debug"]
    with ServerProcess(argv, ready_path="/health", env=env, timeout_s=60) as srv:
        with httpx.Client(base_url=srv.root_url, timeout=60) as web:
            for model in ("leak", "mix", "late"):
                r = web.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "Say it."}]})
                written[f"reply {model}"] = r.content
                with web.stream("POST", "/v1/chat/completions",
                                json={"model": model, "stream": True, "messages": [{"role": "user", "content": "Say it."}]}) as s:
                    written[f"stream {model}"] = b"".join(s.iter_bytes())
            assert b"[redacted]" in written["reply leak"] and b"[redacted]" in written["stream leak"]
            listing = web.get("/traces.json")
            written["traces.json"] = listing.content
            rows = listing.json()["data"]
            assert len(rows) >= 6  # 3 pipelines, streamed and not
            for t in rows:
                tid = t["id"]
                written[f"trace {tid}"] = web.get(f"/traces/{tid}.json").content
                written[f"page {tid}"] = web.get(f"/traces/{tid}").content
            written["page list"] = web.get("/traces").content
        log = srv.log()
    written["server log"] = log
    files_under(tmp_path, written)
    assert_clean(written)
