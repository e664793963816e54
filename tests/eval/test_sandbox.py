"""The sandbox contains hostile code: each case ends with a clear status, fast."""

import asyncio
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from smoa.eval.sandbox import arun_python, capabilities, run_python

pytestmark = pytest.mark.skipif(not capabilities()["linux"], reason="sandbox targets Linux")

CAPS = capabilities()
# RLIMIT_NPROC binds only for a non-root uid: true when we are not root or can drop to one.
NPROC_ENFORCED = (not CAPS["root"]) or CAPS["setpriv"]


def _procs_mentioning(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        if marker in cmd:
            found.append(int(p))
    return found


def test_pass_fail_and_output():
    ok = run_python("print('hello'); import sys; print('oops', file=sys.stderr)")
    assert ok.status == "passed" and ok.returncode == 0
    assert ok.stdout_tail.strip() == "hello" and "oops" in ok.stderr_tail
    bad = run_python("assert 1 + 1 == 3, 'math is broken'")
    assert bad.status == "failed" and bad.returncode == 1
    assert "AssertionError: math is broken" in bad.stderr_tail
    syntax = run_python("def f(:\n  pass")
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr_tail


def test_runs_in_fresh_dir_that_is_deleted():
    r = run_python("import os; print(os.getcwd()); open('scratch.txt', 'w').write('x')")
    assert r.status == "passed"
    cwd = Path(r.stdout_tail.strip())
    assert cwd.name == "work" and not cwd.exists() and not cwd.parent.exists()


def test_stdin_is_closed_and_env_minimal():
    r = run_python("import os, sys; print(repr(sys.stdin.read())); print(sorted(os.environ))")
    assert r.status == "passed"
    first, second = r.stdout_tail.strip().splitlines()
    assert first == "''"
    assert "SMOA_CACHE_DIR" not in second and "PATH" in second


def test_infinite_loop_times_out():
    t = time.monotonic()
    r = run_python("while True:\n    pass", timeout_s=2)
    assert r.status == "timeout"
    assert time.monotonic() - t < 6


def test_sleeping_process_and_its_children_are_killed_on_timeout():
    secs = f"{60 + uuid.uuid4().int % 1000 / 1000:.3f}"  # a unique command line to look for
    r = run_python(
        f"import subprocess, time\nsubprocess.Popen(['sleep', '{secs}'])\ntime.sleep(60)",
        timeout_s=2, allow_subprocess=True,
    )
    assert r.status == "timeout"
    time.sleep(0.3)
    assert _procs_mentioning(f"sleep\0{secs}") == []  # the child is gone too


def test_fork_bomb_refused_by_guard():
    t = time.monotonic()
    r = run_python("import os\nwhile True:\n    os.fork()", timeout_s=3)
    assert r.status == "failed"
    assert "starting a process" in r.stderr_tail
    assert time.monotonic() - t < 5


@pytest.mark.skipif(not NPROC_ENFORCED, reason="RLIMIT_NPROC would not bind (root, no setpriv)")
def test_fork_bomb_contained_by_kernel_limits():
    """Guard off, forks allowed: the process limit, the PID namespace and the group kill
    keep the machine fine and the run ends within its timeout."""
    t = time.monotonic()
    code = (
        "import os, sys\n"
        "print(os.path.abspath(__file__), flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    r = run_python(code, timeout_s=3, guard=False, allow_subprocess=True, max_procs=32)
    elapsed = time.monotonic() - t
    assert r.status == "timeout"
    assert elapsed < 8
    time.sleep(0.5)
    script = r.stdout_tail.strip().splitlines()[0]
    assert script.endswith("solution.py")
    assert _procs_mentioning(script) == []  # everything it forked is gone
    assert run_python("print(1)").status == "passed"  # and the machine still works


def test_huge_allocation_hits_memory_limit():
    r = run_python("x = bytearray(4 * 1024 ** 3)", timeout_s=5, memory_mb=256)
    assert r.status == "memory"
    r2 = run_python("x = [0] * (10 ** 10)", timeout_s=5, memory_mb=256)
    assert r2.status == "memory"


def test_write_outside_dir_refused():
    target = Path("/tmp") / f"smoa-sbx-escape-{uuid.uuid4().hex}.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('pwned')", timeout_s=5)
    assert r.status == "failed"
    assert "PermissionError" in r.stderr_tail and "outside the sandbox" in r.stderr_tail
    assert not target.exists()
    # other routes: os.open, pathlib, rename, a symlink pointing out
    for code in (
        f"import os; os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)",
        f"import pathlib; pathlib.Path({str(target)!r}).write_text('x')",
        f"open('a', 'w').close(); import os; os.rename('a', {str(target)!r})",
        f"import os; os.symlink({str(target)!r}, 'lnk'); open('lnk', 'w').write('x')",
        f"import os; os.chdir('/tmp'); open({target.name!r}, 'w')",
    ):
        r = run_python(code, timeout_s=5)
        assert r.status == "failed", code
        assert "PermissionError" in r.stderr_tail, code
        assert not target.exists(), code


@pytest.mark.skipif(not (CAPS["root"] and CAPS["setpriv"]), reason="needs the uid drop")
def test_write_outside_refused_by_file_permissions_without_guard(tmp_path):
    os.chmod(tmp_path, 0o755)  # root-owned, not writable by others
    target = tmp_path / "escape.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')", timeout_s=5, guard=False)
    assert r.status == "failed" and "Permission denied" in r.stderr_tail
    assert not target.exists()


@pytest.fixture()
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            accepted.append(conn)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    th.join(2)
    srv.close()
    for c in accepted:
        c.close()


def test_socket_connect_blocked(listener):
    port, accepted = listener
    code = (
        "import socket\n"
        "s = socket.socket()\n"
        "s.settimeout(2)\n"
        f"s.connect(('127.0.0.1', {port}))\n"
        "s.sendall(b'hello')\n"
        "print('connected')\n"
    )
    r = run_python(code, timeout_s=5)
    assert r.status == "failed" and "connected" not in r.stdout_tail
    assert "sandbox: network access" in r.stderr_tail
    if CAPS["unshare"]:  # the network namespace alone also stops it
        r2 = run_python(code, timeout_s=5, guard=False)
        assert r2.status == "failed" and "connected" not in r2.stdout_tail
    time.sleep(0.3)
    assert accepted == []


def test_output_is_bounded():
    r = run_python("import sys\nsys.stdout.write('x' * (50 * 1024 * 1024))", timeout_s=10,
                   max_file_mb=4)
    assert r.status == "failed" and "File too large" in r.stderr_tail
    assert len(r.stdout_tail) <= 4000


def test_async_variant_runs_concurrently():
    async def main():
        sem = asyncio.Semaphore(4)

        async def one(code):
            async with sem:
                return await arun_python(code, timeout_s=3)

        return await asyncio.gather(
            one("print(6 * 7)"), one("raise SystemExit(3)"), one("while True: pass"),
            one("import time; time.sleep(0.5); print('slept')"),
        )

    t = time.monotonic()
    ok, exit3, loop, slept = asyncio.run(main())
    assert ok.status == "passed" and ok.stdout_tail.strip() == "42"
    assert exit3.status == "failed" and exit3.returncode == 3
    assert loop.status == "timeout"
    assert slept.status == "passed"
    assert time.monotonic() - t < 6
