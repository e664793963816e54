"""The CLI as a user runs it: a real subprocess, against the loopback test server."""

import json
import subprocess
import sys

import pytest

from smoa.testing import ServerProcess

pytestmark = pytest.mark.server


def smoa(*args, input=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "smoa", *args], capture_output=True, text=True, input=input, timeout=120, env=env
    )


@pytest.fixture(scope="module")
def fake():
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as srv:
        yield srv


@pytest.fixture
def cfg(tmp_path, fake):
    p = tmp_path / "smoa.toml"
    p.write_text(
        f"""
default = "mix"

[backends.fake]
type = "openai"
base_url = "{fake.base_url}"

[pipelines.mix]
method = "smoa"
n = 3
k = 2
max_rounds = 2
agent = {{ backend = "fake", model = "m1" }}
proposers = [{{ backend = "fake", model = "m1" }}, {{ backend = "fake", model = "m2" }}, {{ backend = "fake", model = "m3" }}]

[pipelines.dense]
method = "moa"
n = 3
max_rounds = 2
agent = {{ backend = "fake", model = "m1" }}
"""
    )
    return p


def test_ask_json_smoa_counts_calls(cfg, tmp_path):
    tr = tmp_path / "trace.json"
    r = smoa("ask", "What is 3+4?", "--config", str(cfg), "--json", "--trace", str(tr), "--seed", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    stages = [c["stage"] for c in out["trace"]["calls"]]
    assert stages.count("propose") == 6 and stages[-1] == "aggregate"
    assert out["cost"]["by_stage"]["propose"]["calls"] == 6
    assert json.loads(tr.read_text())["id"] == out["trace"]["id"]
    # proposers use their own models
    assert {c["model"] for c in out["trace"]["calls"] if c["stage"] == "propose"} == {"m1", "m2", "m3"}


def test_ask_moa_counts_calls(cfg):
    r = smoa("ask", "hi", "--config", str(cfg), "--pipeline", "dense", "--json")
    assert r.returncode == 0, r.stderr
    stages = [c["stage"] for c in json.loads(r.stdout)["trace"]["calls"]]
    assert stages == ["propose"] * 6 + ["aggregate"]


def test_ask_reads_stdin_and_prints_summary(cfg):
    r = smoa("ask", "--config", str(cfg), input="What is 2+2?\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "judge kept proposers" in r.stderr and "total" in r.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["ask", ""], "the prompt is empty"),
        (["ask", "q", "--method", "nope"], "unknown method 'nope'"),
        (["ask", "q", "-n", "3", "-k", "3"], "k = 3 must be smaller than n = 3"),
        (["ask", "q", "--config", "/nonexistent/smoa.toml"], "config file not found"),
    ],
)
def test_bad_input_is_one_clear_line(args, needle):
    r = smoa(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("smoa: error: ") and needle in lines[0], r.stderr


def test_unknown_field_and_bad_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipelines.x]\nmethod = 'smoa'\nkk = 2\n")
    r = smoa("ask", "q", "--config", str(bad))
    assert r.returncode == 2 and "pipelines.x.kk: unknown field" in r.stderr
    bad.write_text("[pipelines.x\n")
    r = smoa("ask", "q", "--config", str(bad))
    assert r.returncode == 2 and "not valid TOML" in r.stderr


def test_missing_model_file(tmp_path):
    c = tmp_path / "c.toml"
    c.write_text("[backends.local]\ntype = 'local'\nmodel_path = '/nope/model.gguf'\n[pipelines.p]\nmethod = 'single'\n")
    r = smoa("ask", "q", "--config", str(c))
    assert r.returncode == 2 and "model file not found: /nope/model.gguf" in r.stderr


def test_unreachable_endpoint(tmp_path):
    from smoa.testing import free_port

    c = tmp_path / "c.toml"
    c.write_text(
        f"[backends.gone]\ntype = 'openai'\nbase_url = 'http://127.0.0.1:{free_port()}/v1'\nmax_retries = 0\n"
        "[pipelines.p]\nmethod = 'single'\nagent = { backend = 'gone', model = 'x' }\n"
    )
    r = smoa("ask", "q", "--config", str(c))
    assert r.returncode == 2 and "cannot reach the endpoint" in r.stderr and "Traceback" not in r.stderr


def test_deprecated_http_client_is_one_warning_line_and_still_works(tmp_path, fake):
    c = tmp_path / "c.toml"
    c.write_text(
        f"[backends.old]\ntype = 'openai'\nbase_url = '{fake.base_url}'\nhttp_client = 'builtin'\n"
        "[pipelines.p]\nmethod = 'single'\nagent = { backend = 'old', model = 'm1' }\n"
    )
    r = smoa("ask", "q", "--config", str(c), "--quiet", "--no-store")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("smoa: warning: backend 'old': http_client = 'builtin' is deprecated")


def test_lazy_subcommands_load_on_use_and_keep_their_help():
    """`smoa --help` imports none of eval, server or models; each lazy command's help line is
    the command's own (the copy in LazyGroup cannot drift)."""
    import subprocess
    import sys
    from importlib import import_module

    from smoa.cli import LazyGroup

    for name, (mod, attr, short) in LazyGroup.LAZY.items():
        cmd = getattr(import_module(mod), attr)
        assert cmd.name == name and cmd.get_short_help_str(200) == short
    code = ("import sys, smoa.cli\n"
            "from click.testing import CliRunner\n"
            "r = CliRunner().invoke(smoa.cli.main, ['--help'])\n"
            "assert r.exit_code == 0 and 'serve' in r.output and 'models' in r.output, r.output\n"
            "heavy = [m for m in ('smoa.eval', 'smoa.server', 'smoa.models', 'smoa.config', 'smoa.engine', 'pydantic') if m in sys.modules]\n"
            "print(heavy)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]", p.stdout


def test_ask_imports_only_its_path(cfg, tmp_path):
    """`smoa ask --help` imports neither pydantic nor aiohttp nor the engine; `smoa ask` over an
    HTTP backend imports none of the other paths' heavy modules (the openai SDK, llama_cpp,
    numpy, server, eval, models, and the trace store under --no-store)."""
    code = ("import sys, smoa.cli\n"
            "from click.testing import CliRunner\n"
            "def loaded(names):\n"
            "    return [m for m in names if m in sys.modules]\n"
            "r = CliRunner().invoke(smoa.cli.main, ['ask', '--help'])\n"
            "assert r.exit_code == 0 and '--config' in r.output, r.output\n"
            "print(loaded(('pydantic', 'aiohttp', 'jinja2', 'smoa.config', 'smoa.engine', 'smoa.api')))\n"
            "r = CliRunner().invoke(smoa.cli.main, ['ask', '--config', sys.argv[1], '--no-store', '-q', 'What is 3+4?'])\n"
            "assert r.exit_code == 0 and r.output.strip(), r.output\n"
            "assert 'aiohttp' in sys.modules and 'smoa.engine' in sys.modules\n"
            "print(loaded(('openai', 'llama_cpp', 'numpy', 'httpx', 'smoa.server', 'smoa.eval', 'smoa.models',\n"
            "              'smoa.backends.local', 'smoa.web', 'smoa.tracestore')))\n")
    env = {**__import__("os").environ, "SMOA_CACHE_DIR": str(tmp_path / "cache"), "SMOA_NO_TRACE_STORE": "1"}
    p = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["[]", "[]"], p.stdout
