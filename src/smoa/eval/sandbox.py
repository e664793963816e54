"""Run untrusted Python (model-written code plus benchmark tests) in a throw-away subprocess.

What is enforced, and by what
-----------------------------
Each run gets a fresh ``python -I -B`` interpreter (isolated mode: no user site, no PYTHON*
environment variables, script directory not on ``sys.path``; no ``.pyc`` writes) whose working
directory is a new, empty temporary directory, deleted afterwards. Stdin is ``/dev/null`` and the
environment is minimal (PATH, HOME/TMPDIR pointing at the working directory, LANG, single-threaded
BLAS). Then, in layers:

1. **Kernel resource limits** (``setrlimit`` in ``preexec_fn``): address space (``RLIMIT_AS``,
   ``memory_mb``), CPU seconds (``RLIMIT_CPU``), size of any file written (``RLIMIT_FSIZE``),
   open files, no core dumps, and the number of processes (``RLIMIT_NPROC``). The kernel ignores
   ``RLIMIT_NPROC`` for root, so see 3.
2. **Process containment.** The child starts a new session (its own process group). Where
   ``unshare --net --pid --fork --kill-child`` works (root on Linux), the code runs as PID 1 of a
   fresh PID namespace and in a fresh network namespace: every process it forks dies with it,
   even one that called ``setsid``, and it has no network interface but a downed loopback, so
   no connection can leave (not even to 127.0.0.1 of the host). On timeout or exit the whole
   process group is sent SIGKILL.
3. **Unprivileged user.** When the caller is root and ``setpriv`` is present, the code runs
   under a throw-away numeric uid/gid (no capabilities, ``no_new_privs``). File permissions then
   stop writes to anything not world-writable, and ``RLIMIT_NPROC`` is enforced, which is what
   stops a fork bomb. Each run uses its own uid, so concurrent runs do not share that count.
4. **In-interpreter guard** (``sys.addaudithook``, which code cannot remove): refuses opening a
   path for writing, creating, deleting, renaming, linking or chmod-ing anything whose resolved
   path lies outside the working directory (``/dev/null`` is allowed); refuses socket
   ``connect``/``bind``/``sendto``; refuses ``fork``/``exec``/``system``/``posix_spawn``/
   ``subprocess`` unless ``allow_subprocess=True``; refuses ``setrlimit``, signals to other
   processes and loading native code through ``ctypes``.

What is *not* enforced
----------------------
* The audit-hook guard is a best-effort Python-level fence, not a security boundary: C
  extensions can make system calls directly, a path can be swapped for a symlink between the
  check and the use, and hostile code can tamper with interpreter state. Layers 1-3 are the real
  limits; where they are unavailable (not root, no ``unshare``/``setpriv``, not Linux),
  containment is weaker: check :func:`capabilities`.
* Without the unprivileged uid, world-writable places (``/tmp``, ``/dev/shm``) and, as root,
  everything else are writable to code that gets around the guard.
* Reading files outside the working directory is allowed (the interpreter needs its stdlib).
* There is no cgroup: total memory across forked children is bounded only by
  ``RLIMIT_AS`` x ``RLIMIT_NPROC``; wall-clock time is bounded by ``timeout_s``.

Concurrency limits are the caller's job (e.g. a semaphore around :func:`arun_python`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "SandboxResult",
    "SandboxStatus",
    "capabilities",
    "run_python",
    "arun_python",
]

SandboxStatus = Literal["passed", "failed", "timeout", "memory", "killed", "error"]

TAIL_CHARS = 4000
_SOLUTION = "solution.py"

# The guard runs inside the sandboxed interpreter before the user's code. It is passed with
# ``-c``, so it never exists as a file the code could edit.
_RUNNER = r'''
import os, sys
_ALLOW_SUB = sys.argv[1] == "1"
_GUARD = sys.argv[2] == "1"
_PATH = sys.argv[3]
_ROOT = os.path.realpath(os.getcwd())
_SELF = os.getpid()
_ALLOWED = frozenset({"/dev/null"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_realpath = os.path.realpath
_join = os.path.join
_readlink = os.readlink
_fspath = os.fspath
_getpid = os.getpid
_sep = os.sep

def _resolve(p, dir_fd=None):
    if isinstance(p, int):
        return None
    p = _fspath(p)
    if isinstance(p, bytes):
        p = p.decode("utf-8", "surrogateescape")
    if isinstance(dir_fd, int) and dir_fd >= 0 and not p.startswith("/"):
        try:
            base = _readlink("/proc/self/fd/%d" % dir_fd)
        except OSError:
            return "/"
        p = _join(base, p)
    return _realpath(p)

def _inside(p, dir_fd=None):
    r = _resolve(p, dir_fd)
    if r is None:
        return True
    return r == _ROOT or r.startswith(_ROOT + _sep) or r in _ALLOWED

def _deny(what):
    raise PermissionError("sandbox: %s refused" % what)

_PATH_EVENTS = {
    "os.remove": (0, 1), "os.rmdir": (0, 1), "os.mkdir": (0, 2), "os.chmod": (0, 2),
    "os.chown": (0, 3), "os.truncate": (0, None), "os.utime": (0, 3), "os.mkfifo": (0, 2),
    "os.mknod": (0, 3), "os.chflags": (0, None), "os.lchflags": (0, None),
    "os.setxattr": (0, None), "os.removexattr": (0, None), "shutil.rmtree": (0, 1),
}
_BLOCK_SUB = frozenset({
    "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
    "subprocess.Popen", "pty.spawn", "os.startfile",
})
_BLOCK_ALWAYS = frozenset({
    "resource.setrlimit", "resource.prlimit", "ctypes.dlsym",
    "ctypes.call_function", "socket.sethostname",
})

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = False
        if isinstance(mode, str):
            writing = any(c in mode for c in "wax+")
        elif isinstance(flags, int):
            writing = bool(flags & _WRITE_FLAGS)
        if writing and not _inside(path):
            _deny("writing %r outside the sandbox directory" % (path,))
    elif event in _PATH_EVENTS:
        i, fd_i = _PATH_EVENTS[event]
        dir_fd = args[fd_i] if fd_i is not None and len(args) > fd_i else None
        if not _inside(args[i], dir_fd):
            _deny("%s on %r outside the sandbox directory" % (event, args[i]))
    elif event in ("os.rename", "os.link"):
        if not (_inside(args[0], args[2]) and _inside(args[1], args[3])):
            _deny("%s outside the sandbox directory" % event)
    elif event == "os.symlink":
        if not _inside(args[1], args[2]):
            _deny("os.symlink outside the sandbox directory")
    elif event.startswith("socket.") and event in (
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"
    ):
        _deny("network access (%s)" % event)
    elif event in ("os.kill", "os.killpg", "signal.pthread_kill"):
        if args and args[0] not in (0, _getpid(), _SELF):
            _deny("signalling another process")
    elif event in _BLOCK_ALWAYS:
        _deny(event)
    elif not _ALLOW_SUB and event in _BLOCK_SUB:
        _deny("starting a process (%s)" % event)

if _GUARD:
    sys.addaudithook(_hook)
sys.argv = [_PATH]
with open(_PATH, "rb") as _f:
    _src = _f.read()
_code = compile(_src, _PATH, "exec")
del _f, _src
_g = {"__name__": "__main__", "__file__": _PATH, "__builtins__": __builtins__}
exec(_code, _g)
'''


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    status: ``passed`` (exit 0), ``failed`` (non-zero exit, e.g. an AssertionError),
    ``timeout`` (wall clock or CPU limit), ``memory`` (MemoryError / allocation refused),
    ``killed`` (ended by another signal), ``error`` (the sandbox itself could not run it).
    """

    status: SandboxStatus
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=1)
def capabilities() -> dict[str, bool]:
    """Probe (once per process) which containment layers work on this machine."""
    caps = {"linux": sys.platform.startswith("linux"), "root": False, "unshare": False,
            "setpriv": False}
    if not caps["linux"]:
        return caps
    caps["root"] = os.geteuid() == 0
    unshare = shutil.which("unshare")
    if unshare:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            r = subprocess.run(
                [unshare, "--net", "--pid", "--fork", "--kill-child", "--", "true"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
            )
            caps["unshare"] = r.returncode == 0
    setpriv = shutil.which("setpriv")
    if setpriv and caps["root"]:
        # The interpreter must be readable by an arbitrary uid (it is not if it lives under a
        # private home directory), so try the real thing once.
        uid = _fresh_uid()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            r = subprocess.run(
                [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 "--no-new-privs", sys.executable, "-I", "-B", "-c",
                 "import json, collections, re; print('ok')"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=20, cwd="/",
            )
            caps["setpriv"] = r.returncode == 0 and r.stdout.strip() == b"ok"
    return caps


def _fresh_uid() -> int:
    # A numeric uid no account uses: nothing to log in as, nothing owned, own RLIMIT_NPROC count.
    return 200_000 + secrets.randbelow(800_000)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_CHARS * 4))
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", "replace")[-TAIL_CHARS:]


@dataclass
class _Prepared:
    base: Path
    workdir: Path
    argv: list[str]
    env: dict[str, str]
    preexec: object
    out_path: Path
    err_path: Path
    out: Any = None
    err: Any = None

    def close(self) -> None:
        for f in (self.out, self.err):
            if f is not None:
                f.close()


def _prepare(
    code: str, timeout_s: float, memory_mb: int, allow_subprocess: bool, max_procs: int,
    max_file_mb: int, guard: bool,
) -> _Prepared:
    caps = capabilities()
    base = Path(tempfile.mkdtemp(prefix="smoa-sbx-"))
    try:
        return _prepare_in(base, caps, code, timeout_s, memory_mb, allow_subprocess, max_procs,
                           max_file_mb, guard)
    except BaseException:
        _rmtree(base)
        raise


def _prepare_in(
    base: Path, caps: dict[str, bool], code: str, timeout_s: float, memory_mb: int,
    allow_subprocess: bool, max_procs: int, max_file_mb: int, guard: bool,
) -> _Prepared:
    workdir = base / "work"
    workdir.mkdir()
    os.chmod(base, 0o711)  # traversable by the dropped uid, not listable
    drop = caps["root"] and caps["setpriv"]
    uid = _fresh_uid()
    if drop:
        os.chown(workdir, uid, uid)
    os.chmod(workdir, 0o700)
    sol = workdir / _SOLUTION
    sol.write_text(code, encoding="utf-8")
    if drop:
        os.chown(sol, uid, uid)
    out_path, err_path = base / "stdout", base / "stderr"

    argv: list[str] = []
    if caps["unshare"]:
        argv += [shutil.which("unshare") or "unshare", "--net", "--pid", "--fork",
                 "--kill-child", "--"]
    if drop:
        argv += [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}",
                 "--clear-groups", "--no-new-privs"]
    argv += [sys.executable, "-I", "-B", "-c", _RUNNER, "1" if allow_subprocess else "0",
             "1" if guard else "0", str(sol)]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    mem = int(memory_mb) * 1024 * 1024
    cpu = max(1, int(timeout_s) + 1)
    fsize = int(max_file_mb) * 1024 * 1024

    def preexec() -> None:  # runs in the child between fork and exec
        import resource

        os.setsid()
        limits = [
            (resource.RLIMIT_AS, mem),
            (resource.RLIMIT_CPU, cpu),
            (resource.RLIMIT_FSIZE, fsize),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NOFILE, 256),
            (resource.RLIMIT_NPROC, max_procs),
        ]
        for which, value in limits:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(which, (value, value))

    prep = _Prepared(base, workdir, argv, env, preexec, out_path, err_path)
    prep.out, prep.err = open(out_path, "wb"), open(err_path, "wb")
    return prep


def _classify(returncode: int | None, timed_out: bool, stderr: str) -> SandboxStatus:
    if timed_out:
        return "timeout"
    if returncode == 0:
        return "passed"
    if returncode is None:
        return "error"
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if "MemoryError" in last or "Cannot allocate memory" in stderr[-500:]:
        return "memory"
    if returncode < 0 or returncode >= 128:
        sig = -returncode if returncode < 0 else returncode - 128
        if sig == signal.SIGXCPU:
            return "timeout"
        if sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS) and (
            "MemoryError" in stderr or "memory" in stderr.lower()
        ):
            return "memory"
        return "killed"
    return "failed"


def _rmtree(path: Path) -> None:
    def retry(func, p, _exc):  # a read-only directory left behind by the code
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    shutil.rmtree(path, onerror=retry)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        os.killpg(pid, signal.SIGKILL)


def run_python(
    code: str,
    timeout_s: float = 10,
    memory_mb: int = 512,
    *,
    allow_subprocess: bool = False,
    max_procs: int = 64,
    max_file_mb: int = 16,
    guard: bool = True,
) -> SandboxResult:
    """Run ``code`` as ``__main__`` in a fresh sandboxed interpreter and report how it ended.

    ``status`` is ``passed`` iff the program exits 0 within ``timeout_s`` seconds (wall clock).
    Blocking: call from a thread pool or use :func:`arun_python` inside an event loop.

    ``allow_subprocess`` lifts the guard's ban on fork/exec (the kernel limits still apply);
    ``guard=False`` drops the in-interpreter guard entirely (to test the kernel layers alone);
    ``max_procs`` is ``RLIMIT_NPROC``; ``max_file_mb`` caps any file written, stdout included.
    """
    start = time.monotonic()
    try:
        prep = _prepare(
            code, timeout_s, memory_mb, allow_subprocess, max_procs, max_file_mb, guard
        )
    except OSError as exc:
        return SandboxResult("error", None, "", f"sandbox setup failed: {exc}", 0.0)
    timed_out = False
    returncode: int | None = None
    try:
        try:
            proc = subprocess.Popen(
                prep.argv, cwd=prep.workdir, env=prep.env, stdin=subprocess.DEVNULL,
                stdout=prep.out, stderr=prep.err, preexec_fn=prep.preexec, close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return SandboxResult("error", None, "", f"sandbox start failed: {exc}",
                                 time.monotonic() - start)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            returncode = proc.wait()
        finally:
            _kill_group(proc.pid)  # stragglers that outlived the main process
        prep.close()
        stdout, stderr = _tail(prep.out_path), _tail(prep.err_path)
    finally:
        prep.close()
        _rmtree(prep.base)
    duration = time.monotonic() - start
    return SandboxResult(_classify(returncode, timed_out, stderr), returncode, stdout, stderr,
                         duration)


async def arun_python(
    code: str,
    timeout_s: float = 10,
    memory_mb: int = 512,
    *,
    allow_subprocess: bool = False,
    max_procs: int = 64,
    max_file_mb: int = 16,
    guard: bool = True,
) -> SandboxResult:
    """Async twin of :func:`run_python` (asyncio subprocess; the event loop is not blocked)."""
    start = time.monotonic()
    try:
        prep = await asyncio.to_thread(
            _prepare, code, timeout_s, memory_mb, allow_subprocess, max_procs, max_file_mb,
            guard,
        )
    except OSError as exc:
        return SandboxResult("error", None, "", f"sandbox setup failed: {exc}", 0.0)
    timed_out = False
    returncode: int | None = None
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *prep.argv, cwd=prep.workdir, env=prep.env, stdin=subprocess.DEVNULL,
                stdout=prep.out, stderr=prep.err, preexec_fn=prep.preexec, close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return SandboxResult("error", None, "", f"sandbox start failed: {exc}",
                                 time.monotonic() - start)
        try:
            returncode = await asyncio.wait_for(proc.wait(), timeout=timeout_s)
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            returncode = await proc.wait()
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise
        finally:
            _kill_group(proc.pid)
        prep.close()
        stdout, stderr = await asyncio.to_thread(
            lambda: (_tail(prep.out_path), _tail(prep.err_path))
        )
    finally:
        prep.close()
        await asyncio.to_thread(_rmtree, prep.base)
    duration = time.monotonic() - start
    return SandboxResult(_classify(returncode, timed_out, stderr), returncode, stdout, stderr,
                         duration)
