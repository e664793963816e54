"""The openai backend against a real HTTP server on 127.0.0.1 (smoa.fakeserver)."""

import asyncio
import json
import os
import urllib.request

import pytest

from smoa import BackendError, ConfigError, resolve
from smoa.config import ConfigFile
from smoa.engine import Engine
from smoa.testing import ServerProcess

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def fake():
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as srv:
        yield srv


def cfg_for(url, method="smoa", **extra):
    return ConfigFile(
        backends={"fake": {"type": "openai", "base_url": url, "max_retries": 0}},
        pipelines={"p": {"method": method, "agent": {"backend": "fake", "model": "m1"}, **extra}},
    )


def test_smoa_end_to_end_over_http(fake):
    pipe = resolve(cfg_for(fake.base_url), n=3, k=2, max_rounds=2, seed=3)
    r = asyncio.run(Engine(pipe).run("What is 1+1?"))
    stages = [c.stage for c in r.trace.calls]
    assert stages.count("propose") == 6 and stages.count("judge") == 2 and stages[-1] == "aggregate"
    assert r.trace.layers[0]["judge"]["fallback"] is None  # the server's JSON verdict was used
    assert all(c.prompt_tokens > 0 and c.completion_tokens > 0 for c in r.trace.calls)
    with urllib.request.urlopen(fake.root_url + "/stats") as resp:
        stats = json.load(resp)
    assert stats["requests"] >= len(r.trace.calls)


def test_streaming_over_http(fake):
    pipe = resolve(cfg_for(fake.base_url, method="moa"), n=2, max_rounds=1)
    got = []
    r = asyncio.run(Engine(pipe, on_delta=got.append).run("hi"))
    assert len(got) > 1 and "".join(got) == r.answer
    assert r.trace.calls[-1].completion_tokens > 0


def test_unreachable_endpoint_is_one_clear_error():
    from smoa.testing import free_port

    pipe = resolve(cfg_for(f"http://127.0.0.1:{free_port()}/v1", method="single"))
    with pytest.raises(BackendError, match="cannot reach the endpoint"):
        asyncio.run(Engine(pipe).run("hi"))


def test_missing_api_key_variable_names_the_field(monkeypatch):
    monkeypatch.delenv("SMOA_TEST_MISSING_KEY", raising=False)
    cfg = ConfigFile(
        backends={"hosted": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "SMOA_TEST_MISSING_KEY"}},
        pipelines={"p": {"method": "single", "agent": {"backend": "hosted", "model": "x"}}},
    )
    with pytest.raises(ConfigError, match=r"backends\.hosted: .*SMOA_TEST_MISSING_KEY is not set"):
        resolve(cfg)
    os.environ.pop("SMOA_TEST_MISSING_KEY", None)
