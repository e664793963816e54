"""Each row of the bad-input table (bad_inputs.py, docs/bad-input.md) is a test."""

import asyncio
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bad_inputs import CASES, render  # noqa: E402

from smoa import SmoaError, resolve  # noqa: E402
from smoa.engine import Engine  # noqa: E402
from smoa.testing import ScriptedBackend, ServerProcess, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLI = [c for c in CASES if c.surface == "cli"]
PY = [c for c in CASES if c.surface == "python"]


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Run every CLI row once, in parallel (each is a fresh `python -m smoa` process)."""
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--api-key", "right-key",
                        "--fault-by-model"]) as fake:
        busy = socket.socket()  # a port where something listens, for `serve --port {busy}`
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        subst = {"{dead}": f"http://127.0.0.1:{free_port()}/v1", "{fake}": fake.base_url,
                 "{busy}": str(busy.getsockname()[1])}
        # made here, not in the threads: pytest creates its base folder lazily and not thread-safely
        tmps = {case.id: tmp_path_factory.mktemp(case.id) for case in CLI}

        def one(case):
            tmp = tmps[case.id]
            sub = {**subst, "{tmp}": str(tmp)}

            def fill(s):
                for k, v in sub.items():
                    s = s.replace(k, v)
                return s

            for name, content in case.files.items():
                data = fill(content).encode("utf-8") if isinstance(content, str) else content
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
            for name in case.fifos:
                os.mkfifo(tmp / name)
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SMOA_NO_TRACE_STORE": "1", **case.env}
            env.pop("SMOA_TEST_UNSET_KEY", None)
            p = subprocess.run([sys.executable, "-m", "smoa", *(fill(a) for a in case.argv)], input=case.stdin,
                               capture_output=True, timeout=120, env=env, cwd=tmp)
            return p, fill(case.message)

        with busy, ThreadPoolExecutor(8) as ex:
            return dict(zip([c.id for c in CLI], ex.map(one, CLI), strict=True))


@pytest.mark.parametrize("case", CLI, ids=[c.id for c in CLI])
def test_cli_bad_input(case, cli_results):
    p, message = cli_results[case.id]
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == case.exit_code, err
    assert "Traceback" not in err
    assert err.splitlines() == [f"smoa: error: {message}"]
    assert p.stdout == b""


@pytest.mark.parametrize("case", PY, ids=[c.id for c in PY])
def test_python_bad_input(case):
    pipe = resolve(method="single", instances={"local": ScriptedBackend(responder=lambda r: "never called")})
    with pytest.raises(SmoaError) as ei:
        asyncio.run(Engine(pipe).run(case.query))
    assert str(ei.value) == case.message


def test_the_document_is_current():
    doc = ROOT / "docs" / "bad-input.md"
    assert doc.read_text(encoding="utf-8") == render(), (
        "docs/bad-input.md is stale: PYTHONPATH=src python tests/reliability/bad_inputs.py > docs/bad-input.md"
    )
