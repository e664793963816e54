"""Config loading limits and the [server] table, below the CLI (the CLI rows are in bad_inputs.py)."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from smoa.config import MAX_CONFIG_DEPTH, load_config
from smoa.tracestore import TraceStore
from smoa.types import ConfigError

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
[backends.hosted]
type = "openai"
base_url = "http://127.0.0.1:9/v1"

[pipelines.p]
method = "single"
agent = { backend = "hosted", model = "m" }
"""


def test_the_readme_server_table_is_accepted_by_every_command_and_read_by_serve(tmp_path):
    pytest.importorskip("fastapi")
    from smoa.server.settings import load_server_config

    f = tmp_path / "smoa.toml"
    f.write_text(BASE + "\n[server]\napi_key_env = \"SMOA_API_KEY\"\nmax_in_flight = 3\nsave_traces = true\n")
    cfg = load_config(f)
    assert list(cfg.pipelines) == ["p"]
    _, table = load_server_config(f)
    assert table.max_in_flight == 3


def test_a_server_value_that_is_not_a_table_is_refused(tmp_path):
    f = tmp_path / "smoa.toml"
    f.write_text('server = 3\n' + BASE)
    with pytest.raises(ConfigError, match=r"server: must be a table \(\[server\]\), not int"):
        load_config(f)


def test_nesting_up_to_the_limit_loads(tmp_path):
    # a fallback chain as deep as a person would write it is fine
    chain = "{ model = \"a\", fallback = " * 5 + "{ model = \"z\" }" + " }" * 5
    f = tmp_path / "smoa.toml"
    f.write_text(BASE.replace('agent = { backend = "hosted", model = "m" }', f"agent = {chain}"))
    spec = load_config(f).pipelines["p"].agent
    depth = 0
    while spec.fallback is not None:
        spec, depth = spec.fallback, depth + 1
    assert depth == 5
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * (MAX_CONFIG_DEPTH + 1) + "]" * (MAX_CONFIG_DEPTH + 1) + "\n")
    with pytest.raises(ConfigError, match="nested more than 32 levels deep"):
        load_config(deep)


def test_smoa_run_with_a_fifo_as_config_does_not_hang(tmp_path):
    from smoa.api import _config_file

    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    got: list[BaseException] = []

    def go() -> None:
        try:
            _config_file(fifo)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            got.append(e)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # let the thread end: a writer opens the pipe and closes it
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO as config hung")
    assert len(got) == 1 and isinstance(got[0], ConfigError)
    assert "it is a named pipe, not a regular file" in str(got[0])


def test_trace_list_takes_any_large_count(tmp_path):
    store = tmp_path / "traces.sqlite"
    TraceStore(store).save({"id": "0123456789abcdef", "created_at": time.time(), "method": "single", "calls": []})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SMOA_TRACE_STORE": str(store)}
    p = subprocess.run([sys.executable, "-m", "smoa", "trace", "list", "-n", "99999999999999999999"],
                       capture_output=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr == b""
    assert p.stdout.decode().startswith("0123456789ab ")
