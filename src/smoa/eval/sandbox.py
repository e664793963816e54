"""Run untrusted Python (model-written code plus benchmark tests) behind an OS boundary.

The boundary is Debian's ``bubblewrap`` (``bwrap``, the sandbox Flatpak uses): a small,
well-kept setuid-free tool that builds Linux namespaces. We keep our own code only for what it
does not do: choosing the binds, the per-run limits, and deciding whether a run passed.

Layers, and what each one stops (docs/sandbox.md has the longer version)
----------------------------------------------------------------------
1. **A throw-away uid** (when the caller is root: ``setpriv --reuid/--regid`` to a random
   unused uid, no groups, ``no_new_privs``). The code owns nothing on the host, and the
   kernel's per-uid process count belongs to this run alone.
2. **bubblewrap namespaces**: new user, pid, network, ipc, uts and cgroup namespaces;
   ``--die-with-parent``; ``--new-session``. The mount namespace holds only a read-only
   ``/usr`` (plus the interpreter's prefix when it lives elsewhere, the ``/lib*`` links and
   ``/etc/ld.so.cache``), a fresh ``/proc`` that shows only the sandbox's own processes, a
   minimal ``/dev``, and private size-capped tmpfs ``/tmp`` and ``/dev/shm``; the root is
   remounted read-only. So: no host files to read (no ``/etc``, ``/home``, ``/root``, host
   ``/proc`` command lines or environments), nothing on the host to write, no host socket to
   reach (TCP or UNIX, path or abstract), no host process to signal. The environment is
   cleared and rebuilt (PATH, HOME, TMPDIR, LANG, single-threaded BLAS).
3. **Limits for the whole process tree**: a cgroup when this process may create one (v2, or
   v1 ``memory`` + ``pids``): memory (tmpfs pages included) and process count for the tree,
   and an out-of-memory kill reported as ``memory``. Always, per process: ``RLIMIT_AS``
   (memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` (stdout/stderr are memfds capped by it, so an
   output flood ends the writer), ``RLIMIT_NOFILE``, no core files and, with the throw-away
   uid, ``RLIMIT_NPROC``, all set by util-linux ``prlimit`` (no ``preexec_fn``). Wall clock:
   ``timeout_s``, then the tree is killed (process group, cgroup, and the PID namespace dies
   with its first process). :func:`capabilities` says which of these are active.
4. **The completion nonce** (:mod:`smoa.eval.sandbox_runner`): ``passed`` means the runner
   handed back a per-run random nonce, which it reads only after the code (and the tests)
   returned. Exit statuses and output count for nothing, so ``sys.exit(0)``, ``os._exit(0)``,
   exit hooks, a thread that exits, a signal to itself or a printed "passed" all fail.

There is no Python audit hook: a hook in the process it guards can be switched off by the code
it guards, and the kernel layers above stop everything it used to stop.

Without a working ``bwrap`` nothing runs: :class:`SandboxUnavailable` says what to install.
Concurrency limits are the caller's job (e.g. a semaphore around :func:`arun_python`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..types import SmoaError
from .sandbox_cgroup import Cgroup, cgroup_kind

__all__ = [
    "SandboxResult",
    "SandboxStatus",
    "SandboxUnavailable",
    "capabilities",
    "run_python",
    "arun_python",
]

SandboxStatus = Literal["passed", "failed", "timeout", "memory", "killed", "error"]

TAIL_CHARS = 4000
_RUNNER = (Path(__file__).with_name("sandbox_runner.py")).read_text(encoding="utf-8")
_INSIDE_UID = 1000
_JOIN_CGROUPS = 'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


class SandboxUnavailable(SmoaError, RuntimeError):
    """No working OS sandbox on this machine; the message says what to install."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    status: ``passed`` (the code, and the tests when given, ran to their last statement),
    ``failed`` (an exception, an early exit of any kind, a hook or thread left behind),
    ``timeout`` (wall clock or CPU limit), ``memory`` (MemoryError or the memory limit),
    ``killed`` (ended by a signal, e.g. the output limit), ``error`` (the sandbox itself
    failed). ``detail`` says why in one line.
    """

    status: SandboxStatus
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# --- probing ---------------------------------------------------------------------------

def _reachable_by_anyone(path: str) -> bool:
    """True if a uid with no groups can open ``path`` (every parent searchable by others)."""
    p = Path(path)
    try:
        if not os.stat(p).st_mode & 0o004 and not p.is_dir():
            return False
        for parent in p.parents:
            if not os.stat(parent).st_mode & 0o001:
                return False
    except OSError:
        return False
    return True


def _interpreter(drop: bool) -> tuple[str, str] | None:
    """(python executable, prefix to bind) the sandboxed uid can run, same minor version."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    candidates = [(base, os.path.realpath(sys.base_prefix))]
    for d in ("/usr/bin", "/usr/local/bin"):
        candidates.append((f"{d}/python{ver}", os.path.dirname(d)))
    for exe, prefix in candidates:
        if not os.path.isfile(exe):
            continue
        if drop and not (_reachable_by_anyone(exe) and _reachable_by_anyone(prefix)):
            continue
        return exe, prefix
    return None


@functools.lru_cache(maxsize=1)
def capabilities() -> dict:
    """Probe (once per process) which layers work here; ``reason`` says why if none does."""
    caps: dict = {"linux": sys.platform.startswith("linux"), "root": False, "bwrap": False,
                  "setpriv": False, "cgroup": None, "python": None, "reason": ""}
    if not caps["linux"]:
        caps["reason"] = "the code sandbox needs Linux (bubblewrap namespaces)"
        return caps
    caps["root"] = os.geteuid() == 0
    caps["setpriv"] = caps["root"] and shutil.which("setpriv") is not None
    interp = _interpreter(drop=caps["setpriv"])
    if interp is None:
        caps["reason"] = ("no Python interpreter that an unprivileged uid can run was found; "
                          f"install python{sys.version_info.major}.{sys.version_info.minor} "
                          "under /usr")
        return caps
    caps["python"] = interp[0]
    if shutil.which("prlimit") is None:
        caps["reason"] = "prlimit is not installed: apt-get install util-linux"
        return caps
    if shutil.which("bwrap") is None:
        caps["reason"] = ("bubblewrap is not installed: apt-get install bubblewrap "
                          "(the code sandbox runs model-written code under bwrap)")
        return caps
    caps["cgroup"] = cgroup_kind()
    r = _run("print(6 * 7)", None, 20, 256, 16, 16, caps)
    caps["bwrap"] = r.status == "passed" and r.stdout_tail.strip() == "42"
    if not caps["bwrap"]:
        last = (r.stderr_tail.strip().splitlines() or [r.detail])[-1]
        caps["reason"] = f"bubblewrap does not work here ({last}); user namespaces may be off"
    return caps


def _require() -> dict:
    caps = capabilities()
    if not caps["bwrap"]:
        raise SandboxUnavailable(f"code sandbox unavailable: {caps['reason']}")
    return caps


# --- one run ---------------------------------------------------------------------------

def _bwrap_argv(caps: dict, uid: int | None, tmp_mb: int, fds: tuple[int, int, int]) -> list[str]:
    exe = caps["python"]
    prefix = os.path.realpath(sys.base_prefix) if exe == os.path.realpath(
        getattr(sys, "_base_executable", None) or sys.executable) else "/usr"
    argv: list[str] = []
    if uid is not None:
        argv += [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}",
                 "--clear-groups", "--no-new-privs"]
    argv += [shutil.which("bwrap") or "bwrap",
             "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
             "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session",
             "--uid", str(_INSIDE_UID), "--gid", str(_INSIDE_UID), "--hostname", "sandbox",
             "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    if os.path.isfile("/etc/ld.so.cache"):
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    if prefix != "/usr" and not prefix.startswith("/usr/"):
        argv += ["--ro-bind", prefix, prefix]
    size = str(int(tmp_mb) * 1024 * 1024)
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm",
             "--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for k, v in env.items():
        argv += ["--setenv", k, v]
    argv += ["--", exe, "-I", "-B", "-c", _RUNNER, *map(str, fds)]
    return argv


def _tail(fd: int) -> str:
    size = os.fstat(fd).st_size
    data = os.pread(fd, TAIL_CHARS * 4, max(0, size - TAIL_CHARS * 4))
    return data.decode("utf-8", "replace")[-TAIL_CHARS:]


def _classify(rc: int | None, timed_out: bool, stderr: str, oom: bool,
              finished: bool) -> tuple[SandboxStatus, str]:
    if timed_out:
        return "timeout", "ran past its time limit"
    if rc == 0 and finished:
        return "passed", ""  # the tests' last statement returned: that is the verdict
    if oom:
        return "memory", "the process tree hit its memory limit"
    if rc is None:
        return "error", "the sandbox did not start"
    tail = stderr[-800:]
    if "MemoryError" in tail or "Cannot allocate memory" in tail:
        return "memory", "an allocation was refused (memory limit)"
    if rc < 0 or rc >= 128:
        sig = -rc if rc < 0 else rc - 128
        if sig == signal.SIGXCPU:
            return "timeout", "ran past its CPU-time limit"
        if sig == signal.SIGXFSZ:
            return "killed", "wrote past the output/file size limit"
        with contextlib.suppress(ValueError):
            return "killed", f"ended by signal {signal.Signals(sig).name}"
        return "killed", f"ended by signal {sig}"
    lines = [ln for ln in stderr.splitlines() if ln.startswith("smoa-sandbox: ")]
    if lines:
        return "failed", lines[-1][len("smoa-sandbox: "):]
    if rc == 0:
        return "failed", "exited before the end of the code and tests (no completion nonce)"
    return "failed", f"exited with status {rc} before the end of the code and tests"


def _wait(proc: subprocess.Popen, deadline: float, cancel: threading.Event | None) -> int:
    """The exit status; TimeoutExpired at the deadline or as soon as ``cancel`` is set."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (cancel is not None and cancel.is_set()):
            raise subprocess.TimeoutExpired(proc.args, 0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=min(left, 0.05) if cancel is not None else left)


def _run(code: str, tests: str | None, timeout_s: float, memory_mb: int, max_procs: int,
         max_file_mb: int, caps: dict, cancel: threading.Event | None = None) -> SandboxResult:
    start = time.monotonic()
    uid = 200_000 + secrets.randbelow(800_000) if caps["setpriv"] else None
    nonce = secrets.token_hex(32).encode()
    mem = int(memory_mb) * 1024 * 1024
    cg = None
    if caps["cgroup"]:  # it worked when probed: a run without it would be weaker, so refuse
        try:
            cg = Cgroup(caps["cgroup"], mem, max_procs)
        except OSError as exc:
            return SandboxResult("error", None, "", f"sandbox: cgroup setup failed: {exc}",
                                 time.monotonic() - start, "the run's cgroup could not be made")
    # stdout and stderr are memory files: capped by RLIMIT_FSIZE, gone with their last fd,
    # so even a caller killed -9 leaves nothing on disk
    out_fd, err_fd = os.memfd_create("smoa-stdout"), os.memfd_create("smoa-stderr")
    payload_fd = os.memfd_create("smoa-payload", 0)
    nonce_r, nonce_w = os.pipe()
    result_r, result_w = os.pipe()
    os.write(payload_fd, json.dumps({"code": code, "tests": tests}).encode())
    os.lseek(payload_fd, 0, os.SEEK_SET)
    os.write(nonce_w, nonce)
    os.close(nonce_w)
    os.set_blocking(result_r, False)
    fds = (payload_fd, nonce_r, result_w)
    cpu, fsize = max(1, int(timeout_s) + 1), int(max_file_mb) * 1024 * 1024
    # No preexec_fn (unsafe with threads): a shell joins the cgroup, prlimit sets the limits,
    # each then execs the next step.
    argv: list[str] = []
    if cg:
        argv += ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", *cg.procs, "--"]
    argv += [shutil.which("prlimit") or "prlimit", f"--as={mem}", f"--cpu={cpu}",
             f"--fsize={fsize}", "--core=0", "--nofile=256"]
    if uid is not None:
        argv.append(f"--nproc={max_procs}")
    argv += _bwrap_argv(caps, uid, max_file_mb, fds)

    timed_out, rc, got = False, None, b""
    try:
        try:
            proc = subprocess.Popen(
                argv, cwd="/", env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                stdout=out_fd, stderr=err_fd, pass_fds=fds, start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return SandboxResult("error", None, "", f"sandbox start failed: {exc}",
                                 time.monotonic() - start, "the sandbox did not start")
        for fd in fds:
            os.close(fd)
        fds = ()
        try:
            rc = _wait(proc, start + timeout_s, cancel)
        except subprocess.TimeoutExpired:
            timed_out = True
            if cg:  # kill the tree but the outer bwrap, which then reaps its child
                cg.kill(spare=proc.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=2)
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        finally:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BlockingIOError, OSError):
            got = os.read(result_r, 4096)
        oom = cg.oom_killed() if cg else False
        stdout, stderr = _tail(out_fd), _tail(err_fd)
    finally:
        for fd in (*fds, result_r, out_fd, err_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        if cg:
            cg.kill_and_remove()
    finished = hmac.compare_digest(got, nonce)
    status, detail = _classify(rc, timed_out, stderr, oom, finished)
    return SandboxResult(status, rc, stdout, stderr, time.monotonic() - start, detail)


def run_python(
    code: str,
    timeout_s: float = 10,
    memory_mb: int = 512,
    *,
    tests: str | None = None,
    max_procs: int = 64,
    max_file_mb: int = 16,
) -> SandboxResult:
    """Run ``code`` as ``__main__`` in a fresh sandbox, then ``tests`` (if given), and report.

    ``tests`` run after the code, in a copy of its namespace, with builtins and the modules
    loaded before the code restored. ``status`` is ``passed`` only if both ran to their last
    statement within ``timeout_s`` (wall clock) and left no thread or trace hook behind.
    ``memory_mb`` bounds the tree (cgroup) and each process (``RLIMIT_AS``); ``max_procs``
    the number of processes; ``max_file_mb`` any file written, stdout and stderr included,
    and the size of each of the private ``/tmp`` and ``/dev/shm``.
    Blocking: call from a thread pool or use :func:`arun_python` inside an event loop.
    Raises :class:`SandboxUnavailable` when bubblewrap cannot run here.
    """
    caps = _require()
    return _run(code, tests, timeout_s, memory_mb, max_procs, max_file_mb, caps)


async def arun_python(
    code: str,
    timeout_s: float = 10,
    memory_mb: int = 512,
    *,
    tests: str | None = None,
    max_procs: int = 64,
    max_file_mb: int = 16,
) -> SandboxResult:
    """Async twin of :func:`run_python` (a worker thread waits; cancelling kills the tree)."""
    caps = _require()
    cancel = threading.Event()
    fut = asyncio.ensure_future(asyncio.to_thread(
        _run, code, tests, timeout_s, memory_mb, max_procs, max_file_mb, caps, cancel))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        cancel.set()  # the worker kills the tree and removes its cgroup and files
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(fut, timeout=10)
        raise
