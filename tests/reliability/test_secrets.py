"""A configured API key never appears in a trace, a log line, a report or an error message.

The key is checked for in everything a run writes: stdout (the --json report), stderr (the
summary, errors, and the SDK's own debug log with OPENAI_LOG=debug), the --trace file and
the trace store; in-process, every log record of every logger at DEBUG. Three endpoints:
one that accepts the key, one that refuses it (401), and one that echoes the key it got
back in its error messages, the way some proxies do.
"""

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smoa import SmoaError, resolve
from smoa.engine import Engine
from smoa.testing import ServerProcess

pytestmark = pytest.mark.server

KEY = "sk-smoa-test-SECRET-5f1c0e9a7b3d42c8a6e1"
WRONG = "sk-smoa-test-WRONG-0a9b8c7d6e5f4a3b2c1d"
ROOT = Path(__file__).resolve().parents[2]

ECHO_SERVER = textwrap.dedent('''
    import sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request):
        key = request.headers.get("authorization", "")
        return JSONResponse({"error": {"message": f"Incorrect API key provided: {key}. Header was {key}",
                                       "type": "invalid_request_error"}}, status_code=int(sys.argv[2]))

    async def models(request):
        return JSONResponse({"data": []})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
''')


@pytest.fixture(scope="module")
def fake():
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--api-key", KEY]) as srv:
        yield srv


@pytest.fixture(scope="module", params=["401", "500"])
def echo(request, tmp_path_factory):
    script = tmp_path_factory.mktemp("echo") / "echo_server.py"
    script.write_text(ECHO_SERVER)
    with ServerProcess(["python", str(script), "{port}", request.param]) as srv:
        yield srv


def config_text(url, method="smoa", http_client="aiohttp"):
    return textwrap.dedent(f'''
        [backends.hosted]
        type = "openai"
        base_url = "{url}"
        http_client = "{http_client}"
        api_key_env = "SMOA_SECRET_TEST_KEY"
        retries = 1
        backoff_s = 0

        [pipelines.p]
        method = "{method}"
        n = 3
        k = 2
        max_rounds = 2
        agent = {{ backend = "hosted", model = "m1" }}
    ''')


def run_cli(tmp_path, url, key, http_client="aiohttp"):
    cfg = tmp_path / "smoa.toml"
    cfg.write_text(config_text(url, http_client=http_client))
    trace = tmp_path / "trace.json"
    store = tmp_path / "traces.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SMOA_SECRET_TEST_KEY": key, "OPENAI_LOG": "debug",
           "SMOA_TRACE_STORE": str(store), "SMOA_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("SMOA_NO_TRACE_STORE", None)
    p = subprocess.run([sys.executable, "-m", "smoa", "ask", "What is 2+2?", "-c", str(cfg), "--json", "--trace", str(trace)],
                       capture_output=True, timeout=120, env=env)
    written = {"stdout": p.stdout, "stderr": p.stderr}
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.name != "smoa.toml":
            written[str(f)] = f.read_bytes()
    return p, written


def assert_no_key(written, key):
    for where, data in written.items():
        assert key.encode() not in data, f"the API key leaked into {where}"
        assert key[12:].encode() not in data, f"part of the API key leaked into {where}"


@pytest.mark.parametrize("client", ["aiohttp", "openai-sdk"])
def test_cli_run_with_the_right_key_leaks_nothing(fake, tmp_path, client):
    p, written = run_cli(tmp_path, fake.base_url, KEY, http_client=client)
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout)
    assert out["answer"] and len(out["trace"]["calls"]) >= 8
    if client == "openai-sdk":
        assert b"HTTP Request" in p.stderr or b"Request options" in p.stderr  # the SDK's debug log was on
    assert any("trace.json" in w for w in written) and any("traces.sqlite" in w for w in written)
    assert_no_key(written, KEY)


def test_cli_run_with_a_wrong_key_leaks_neither_key(fake, tmp_path):
    p, written = run_cli(tmp_path, fake.base_url, WRONG)
    assert p.returncode == 2
    assert b"refused the API key (401)" in p.stderr
    assert_no_key(written, WRONG)
    assert_no_key(written, KEY)


def test_an_endpoint_that_echoes_the_key_is_redacted(echo, tmp_path):
    p, written = run_cli(tmp_path, echo.base_url, KEY)
    assert p.returncode == 2
    assert_no_key(written, KEY)
    if b"500" in p.stderr:
        assert b"Incorrect API key provided: Bearer [redacted]" in p.stderr


def test_in_process_logs_traces_and_errors(echo, fake, monkeypatch):
    monkeypatch.setenv("SMOA_SECRET_TEST_KEY", KEY)
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))
            if record.exc_info:
                records.append(logging.Formatter().formatException(record.exc_info))

    h = Grab(level=logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(h)
    root.setLevel(logging.DEBUG)
    try:
        texts = []
        for url in (fake.base_url, echo.base_url):
            from smoa.config import load_config

            cfg_path = Path(os.environ["SMOA_CACHE_DIR"]).parent / "c.toml"
            cfg_path.parent.mkdir(parents=True, exist_ok=True)
            cfg_path.write_text(config_text(url))
            pipe = resolve(load_config(cfg_path), cache=False)
            try:
                r = asyncio.run(Engine(pipe).run("What is 2+2?"))
                texts.append(r.trace.to_json())
                texts.append(json.dumps(r.to_dict()))
            except SmoaError as e:
                texts.append(str(e))
                texts.append(e.trace.to_json())
    finally:
        root.removeHandler(h)
        root.setLevel(old)
    assert records, "no log records were captured"
    for t in texts + records:
        assert KEY not in t and KEY[12:] not in t


def test_redact_masks_registered_keys_and_key_shapes():
    from smoa.redaction import redact, register_secret

    register_secret("plain-secret-value")
    assert redact("x plain-secret-value y") == "x [redacted] y"
    assert redact("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer [redacted]"
    assert redact("api_key=abcd1234efgh5678") == "api_key=[redacted]"
    assert redact("key sk-abcdefghijklmnopqrstu end") == "key sk-[redacted] end"
    assert redact("an ordinary sentence about sk-learn") == "an ordinary sentence about sk-learn"
    assert str(SmoaError("failed with plain-secret-value")) == "failed with [redacted]"
