"""`smoa.run(config=PATH)`: one resolved config and one set of backends per file and content,
shared by every query of the process (limits hold across queries; no socket left unclosed)."""

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

import smoa
from smoa import api
from smoa.testing import ServerProcess

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake():
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--latency", "0.05"]) as srv:
        yield srv


def write_config(path, url, limit):
    path.write_text(textwrap.dedent(f'''
        [backends.up]
        type = "openai"
        base_url = "{url}"
        max_concurrency = {limit}

        [pipelines.p]
        method = "moa"
        n = 3
        max_rounds = 1
        cache = false
        agent = {{ backend = "up", model = "m" }}
    '''))


def peak(fake):
    return httpx.get(fake.root_url + "/stats").json()["peak_in_flight"]


def test_the_limit_holds_across_queries_and_the_file_is_read_once(fake, tmp_path):
    cfg = tmp_path / "smoa.toml"
    write_config(cfg, fake.base_url, 2)
    before = peak(fake)

    async def many():
        return await asyncio.gather(*(smoa.run(f"q{i}", config=cfg) for i in range(6)))

    rs = asyncio.run(many())
    assert all(r.answer for r in rs)
    assert peak(fake) <= max(2, before)  # 6 queries x 3 proposers, never more than 2 at once
    first = api._config_file(cfg)
    assert api._config_file(str(cfg)) is first  # same file, same content: the same objects
    write_config(cfg, fake.base_url, 3)  # edited: read again
    assert api._config_file(cfg) is not first


def test_no_unclosed_socket_or_file_under_W_error(fake, tmp_path):
    cfg = tmp_path / "smoa.toml"
    write_config(cfg, fake.base_url, 4)
    code = textwrap.dedent(f'''
        import gc, smoa
        for i in range(3):
            print(smoa.run_sync("q" + str(i), config={str(cfg)!r}).answer)
        gc.collect()
    ''')
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SMOA_CACHE_DIR": str(tmp_path / "c"),
           "SMOA_TRACE_STORE": str(tmp_path / "t.sqlite")}
    p = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", code],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "ResourceWarning" not in p.stderr and "unclosed" not in p.stderr, p.stderr[-2000:]
    assert len(p.stdout.strip().splitlines()) == 3
