"""The sandbox is an OS boundary: hostile code tries to escape and every attempt fails.

Each test starts something on the host (a process with a secret, a file, a TCP listener, a
UNIX socket) and checks from the host side that the code in the sandbox could not reach it.
"""

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from smoa.eval.sandbox import SandboxUnavailable, arun_python, capabilities, run_python

CAPS = capabilities()


def _procs_mentioning(marker: str) -> list[int]:
    """Live host processes whose command line contains ``marker``."""
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


def test_bubblewrap_is_the_boundary():
    assert CAPS["bwrap"], CAPS["reason"]  # make test installs bubblewrap; CI must have it
    if CAPS["root"]:
        assert CAPS["setpriv"]  # root callers always drop to a throw-away uid


def test_pass_fail_and_output():
    ok = run_python("print('hello'); import sys; print('oops', file=sys.stderr)")
    assert ok.status == "passed" and ok.returncode == 0
    assert ok.stdout_tail.strip() == "hello" and "oops" in ok.stderr_tail
    bad = run_python("assert 1 + 1 == 3, 'math is broken'")
    assert bad.status == "failed" and bad.returncode == 1
    assert "AssertionError: math is broken" in bad.stderr_tail
    syntax = run_python("def f(:\n  pass")
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr_tail


def test_tests_run_after_the_code_and_must_finish():
    code = "def add(a, b):\n    return a + b\n"
    assert run_python(code, tests="assert add(2, 3) == 5\n").status == "passed"
    r = run_python(code, tests="assert add(2, 3) == 6\n")
    assert r.status == "failed" and "tests did not finish" in r.detail
    r = run_python(code, tests="assert add(2, 3) == 5\nimport sys\nsys.exit(0)\nassert 0\n")
    assert r.status == "failed"
    r = run_python(code + "import os\nos._exit(0)\n", tests="assert add(2, 3) == 5\n")
    assert r.status == "failed" and "no completion nonce" in r.detail


def test_stdin_closed_env_rebuilt_secrets_absent(monkeypatch):
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("SMOA_TEST_API_KEY", secret)
    r = run_python("import os, sys; print(repr(sys.stdin.read())); print(dict(os.environ))\n"
                   "print(open('/proc/self/environ').read())")
    assert r.status == "passed"
    assert r.stdout_tail.splitlines()[0] == "''"
    assert secret not in r.stdout_tail and "SMOA_TEST_API_KEY" not in r.stdout_tail


def test_host_processes_and_files_are_invisible(tmp_path):
    secret = f"--key=secret-{uuid.uuid4().hex}"
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", secret])
    f = tmp_path / "secret.txt"
    f.write_text(secret)
    os.chmod(tmp_path, 0o755)
    os.chmod(f, 0o644)
    code = (
        "import os\n"
        "seen = []\n"
        "for p in os.listdir('/proc'):\n"
        "    for part in ('cmdline', 'environ'):\n"
        "        try:\n"
        "            seen.append(open(f'/proc/{p}/{part}', 'rb').read().decode('latin-1'))\n"
        "        except OSError:\n"
        "            pass\n"
        "print('\\n'.join(seen)[-2000:])\n"
        f"print('host pid visible:', os.path.exists('/proc/{host.pid}'))\n"
        "print('pids:', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
        f"print('secret seen:', any({secret!r} in s for s in seen))\n"
        "for path in (" + repr(str(f)) + ", '/etc/passwd', '/etc/hostname', '/root', '/work',\n"
        "             '/home', '/sys/fs/cgroup', '/run', '/var'):\n"
        "    print(path, os.path.exists(path))\n"
    )
    try:
        r = run_python(code)
    finally:
        host.kill()
        host.wait()
    assert r.status == "passed", r.stderr_tail
    assert secret not in r.stdout_tail and "secret seen: False" in r.stdout_tail
    assert "host pid visible: False" in r.stdout_tail or host.pid <= 3
    pids = eval(r.stdout_tail.split("pids: ", 1)[1].splitlines()[0])  # noqa: S307
    assert max(pids) < 10  # a fresh PID namespace: only the sandbox's own processes
    for line in r.stdout_tail.splitlines()[-9:]:
        assert line.endswith("False"), line


def test_writes_stay_inside_and_vanish(tmp_path):
    tag = uuid.uuid4().hex
    os.chmod(tmp_path, 0o777)  # writable by anyone on the host: the mount view must stop it
    targets = [f"/tmp/smoa-escape-{tag}", f"/dev/shm/smoa-escape-{tag}",
               str(tmp_path / f"escape-{tag}"), f"/usr/smoa-escape-{tag}", f"/smoa-escape-{tag}"]
    code = (
        "import os\n"
        f"for t in {targets!r}:\n"
        "    try:\n"
        "        os.makedirs(os.path.dirname(t), exist_ok=True)\n"
        "        open(t, 'w').write('pwned')\n"
        "        print('wrote', t)\n"
        "    except OSError as e:\n"
        "        print('refused', t, e.errno)\n"
    )
    r = run_python(code)
    assert r.status == "passed", r.stderr_tail
    for t in targets:
        assert not os.path.exists(t), t
    # inside, /tmp and /dev/shm are private: the writes there succeed and leave nothing
    assert f"wrote /tmp/smoa-escape-{tag}" in r.stdout_tail
    assert f"wrote /dev/shm/smoa-escape-{tag}" in r.stdout_tail
    assert f"refused /usr/smoa-escape-{tag} 30" in r.stdout_tail  # EROFS
    assert f"refused /smoa-escape-{tag} 30" in r.stdout_tail


def test_private_tmp_is_size_capped():
    code = ("for i in range(4):\n"
            "    open(f'/tmp/part{i}', 'wb').write(b'x' * (3 * 1024 * 1024))\n")
    assert run_python(code, max_file_mb=16).status == "passed"
    r = run_python(code, max_file_mb=8)  # each file fits the file limit, together not /tmp
    assert r.status == "failed" and "No space left" in r.stderr_tail


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


def test_no_host_network_tcp_or_unix(listener, tmp_path):
    port, accepted = listener
    path = tmp_path / "host.sock"
    os.chmod(tmp_path, 0o777)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(path))
    os.chmod(path, 0o777)
    unix.listen(4)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"\0smoa-test-{uuid.uuid4().hex}"
    abstract.bind(name)
    abstract.listen(4)
    code = (
        "import socket\n"
        "def attempt(fam, addr):\n"
        "    s = socket.socket(fam, socket.SOCK_STREAM)\n"
        "    s.settimeout(2)\n"
        "    try:\n"
        "        s.connect(addr)\n"
        "        s.sendall(b'hello')\n"
        "        print('connected', addr)\n"
        "    except OSError as e:\n"
        "        print('refused', e.errno)\n"
        f"attempt(socket.AF_INET, ('127.0.0.1', {port}))\n"
        f"attempt(socket.AF_UNIX, {str(path)!r})\n"
        f"attempt(socket.AF_UNIX, {name!r})\n"
    )
    try:
        r = run_python(code, timeout_s=8)
        unix.settimeout(0.3)
        abstract.settimeout(0.3)
        for s in (unix, abstract):
            with pytest.raises(TimeoutError):
                s.accept()
    finally:
        unix.close()
        abstract.close()
    assert r.status == "passed", r.stderr_tail
    assert "connected" not in r.stdout_tail and r.stdout_tail.count("refused") == 3
    time.sleep(0.3)
    assert accepted == []


def test_infinite_loop_times_out():
    t = time.monotonic()
    r = run_python("while True:\n    pass", timeout_s=2)
    assert r.status == "timeout"
    assert time.monotonic() - t < 6


def test_fork_bomb_is_contained_and_leaves_nothing():
    tag = f"{60 + uuid.uuid4().int % 1000 / 1000:.3f}"
    t = time.monotonic()
    code = (
        "import os, time\n"
        "while True:\n"
        "    try:\n"
        f"        if os.fork() == 0:\n            os.execv('/bin/sleep', ['sleep', '{tag}'])\n"
        "    except OSError:\n"
        "        time.sleep(0.01)\n"
    )
    r = run_python(code, timeout_s=3, max_procs=32)
    assert r.status == "timeout"
    assert time.monotonic() - t < 8
    time.sleep(0.3)
    assert _procs_mentioning(f"sleep\0{tag}") == []
    assert run_python("print(1)").status == "passed"  # and the machine still works


def test_daemonized_child_is_killed():
    tag = f"{70 + uuid.uuid4().int % 1000 / 1000:.3f}"
    code = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/bin/sleep', ['sleep', '{tag}'])\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    r = run_python(code, timeout_s=5)
    assert r.status == "passed", r.stderr_tail
    time.sleep(0.3)
    assert _procs_mentioning(f"sleep\0{tag}") == []


def test_cannot_signal_the_caller_or_host_processes():
    me = os.getpid()
    host = subprocess.Popen(["sleep", "30"])
    code = (
        "import os, signal\n"
        f"for pid in ({me}, {host.pid}, os.getppid(), 1, -1):\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError as e:\n"
        "        print('refused', pid, e.errno)\n"
    )
    try:
        r = run_python(code, timeout_s=5)
        time.sleep(0.2)
        assert host.poll() is None  # the host process is untouched
    finally:
        host.kill()
        host.wait()
    # host pids do not exist in the sandbox's PID namespace; pid 1 there is its own init
    assert f"refused {me} 3" in r.stdout_tail and f"refused {host.pid} 3" in r.stdout_tail
    os.kill(me, 0)  # and this process is still here


def test_memory_bomb_single_process():
    r = run_python("x = bytearray(4 * 1024 ** 3)", timeout_s=5, memory_mb=256)
    assert r.status == "memory"
    r2 = run_python("x = [0] * (10 ** 10)", timeout_s=5, memory_mb=256)
    assert r2.status == "memory"


@pytest.mark.skipif(CAPS["cgroup"] is None, reason="no cgroup this process may create")
def test_memory_bomb_across_children_hits_the_tree_limit():
    """Each child stays under the per-process limit; together they exceed the tree's."""
    code = (
        "import os, time\n"
        "kids = []\n"
        "for i in range(6):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        b = bytearray(150 * 1024 * 1024)\n"
        "        for j in range(0, len(b), 4096):\n"
        "            b[j] = 1\n"
        "        time.sleep(3)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "for pid in kids:\n"
        "    _, st = os.waitpid(pid, 0)\n"
        "    assert st == 0, st\n"
        "print('all children survived')\n"
    )
    r = run_python(code, timeout_s=10, memory_mb=300)
    assert r.status != "passed" and "all children survived" not in r.stdout_tail
    assert r.status in ("memory", "failed"), (r.status, r.detail)


def test_output_flood_is_bounded():
    t = time.monotonic()
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", timeout_s=10,
                   max_file_mb=4)
    # Python ignores SIGXFSZ, so the write fails with EFBIG; other programs get the signal
    assert r.status in ("failed", "killed")
    assert "File too large" in r.stderr_tail or "size limit" in r.detail
    assert len(r.stdout_tail) <= 4000
    assert time.monotonic() - t < 8


def test_unavailable_sandbox_says_what_to_install(monkeypatch):
    import smoa.eval.sandbox as sb

    monkeypatch.setattr(sb, "capabilities", lambda: {
        "bwrap": False, "reason": "bubblewrap is not installed: apt-get install bubblewrap"})
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        sb.run_python("print(1)")
    import smoa.eval.benchmarks.code as code

    monkeypatch.setattr(code, "capabilities", sb.capabilities)
    with pytest.raises(SandboxUnavailable, match="humaneval needs the code sandbox"):
        code.HumanEval().check_ready()  # run_eval calls it before any model call


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
    assert exit3.status == "failed" and exit3.returncode == 1
    assert loop.status == "timeout"
    assert slept.status == "passed"
    assert time.monotonic() - t < 6


def test_no_cgroup_or_file_left_behind(monkeypatch):
    import smoa.eval.sandbox_cgroup as sc

    made_dirs = []
    init = sc.Cgroup.__init__

    def record_cg(self, *a):
        init(self, *a)
        made_dirs.extend(self.dirs)

    monkeypatch.setattr(sc.Cgroup, "__init__", record_cg)
    fds_before = set(os.listdir("/proc/self/fd"))
    for code in ("print(1)", "while True: pass", "import os; os._exit(0)"):
        run_python(code, timeout_s=2)
    assert set(os.listdir("/proc/self/fd")) <= fds_before  # memfds and pipes closed
    if CAPS["cgroup"]:
        assert len(made_dirs) >= 3
        sc._remove_pending_at_exit()  # a dir whose zombie was not yet reaped goes here
        assert not [d for d in made_dirs if d.exists()]


def test_cancelling_the_async_run_kills_the_tree():
    tag = f"{80 + uuid.uuid4().int % 1000 / 1000:.3f}"

    async def main():
        task = asyncio.create_task(arun_python(
            f"import os\nos.system('sleep {tag}')\n", timeout_s=30))
        await asyncio.sleep(1.0)
        assert _procs_mentioning(f"sleep\0{tag}")  # it is running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    t = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - t < 8
    time.sleep(0.3)
    assert _procs_mentioning(f"sleep\0{tag}") == []


def test_sandbox_dies_with_the_caller():
    tag = f"{90 + uuid.uuid4().int % 1000 / 1000:.3f}"
    caller = subprocess.Popen([sys.executable, "-c", (
        "from smoa.eval.sandbox import run_python\n"
        f"run_python(\"import os\\nos.system('sleep {tag}')\", timeout_s=60)\n")],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 20
        while not _procs_mentioning(f"sleep\0{tag}") and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = _procs_mentioning(f"sleep\0{tag}")[0]
        cgroups = [line.split(":", 2)[2] for line in
                   Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                   if "smoa-sbx-" in line]
    finally:
        caller.kill()  # SIGKILL: no cleanup code runs in the caller
        caller.wait()
    deadline = time.monotonic() + 5
    while _procs_mentioning(f"sleep\0{tag}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _procs_mentioning(f"sleep\0{tag}") == []
    for line in cgroups:  # the dead caller could not remove its cgroups: do it for it
        for d in Path("/sys/fs/cgroup").glob(f"*{line}"):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


@pytest.mark.skipif(CAPS["cgroup"] is None, reason="no cgroup this process may create")
def test_a_run_whose_cgroup_fails_does_not_run_weaker(monkeypatch):
    import smoa.eval.sandbox_cgroup as sc

    made = []
    real = sc.Cgroup._make

    def half(self, kind, memory, pids):
        made.extend(self.dirs)
        self.dirs[0].mkdir()  # the first directory is made, then the kernel says no
        raise PermissionError("cgroup.procs: permission denied")

    monkeypatch.setattr(sc.Cgroup, "_make", half)
    r = run_python("print('ran')")
    assert r.status == "error" and "cgroup" in r.detail and "ran" not in r.stdout_tail
    assert made and not any(d.exists() for d in made)
    monkeypatch.setattr(sc.Cgroup, "_make", real)
    assert run_python("print('ran')").status == "passed"
