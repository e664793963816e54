"""Per-run cgroups for :mod:`smoa.eval.sandbox`: memory and process count of a whole tree.

Our own code because no small, kept library does this (``cgcreate``/``systemd-run`` need
packages or a running systemd that containers lack); it is a few writes to cgroupfs: v2 with
the ``memory`` and ``pids`` controllers, or v1's ``memory`` and ``pids`` hierarchies.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import secrets
import signal
import threading
import time
from pathlib import Path

__all__ = ["Cgroup", "cgroup_kind"]

CGROOT = Path("/sys/fs/cgroup")


def cgroup_kind() -> str | None:
    """'v2' or 'v1' if this process can create the cgroups a run needs, else None."""
    name = f"smoa-probe-{secrets.token_hex(4)}"
    if (CGROOT / "cgroup.controllers").is_file():
        ctl = (CGROOT / "cgroup.subtree_control")
        with contextlib.suppress(OSError):
            have = ctl.read_text().split()
            if "memory" in have and "pids" in have:
                d = CGROOT / name
                d.mkdir()
                d.rmdir()
                return "v2"
        return None
    made = []
    try:
        for c in ("memory", "pids"):
            d = CGROOT / c / name
            d.mkdir()
            made.append(d)
        return "v1"
    except OSError:
        return None
    finally:
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()


class Cgroup:
    """A per-run cgroup (v2, or v1 memory + pids) that bounds and later kills the tree."""

    def __init__(self, kind: str, memory: int, pids: int) -> None:
        _sweep_stale()
        _remove_pending()
        name = f"smoa-sbx-{secrets.token_hex(6)}"
        self.kind = kind
        self.dirs = [CGROOT / name] if kind == "v2" else [
            CGROOT / "memory" / name, CGROOT / "pids" / name]
        try:
            self._make(kind, memory, pids)
        except OSError:
            self.kill_and_remove()
            raise
        self.procs = [str(d / "cgroup.procs") for d in self.dirs]

    def _make(self, kind: str, memory: int, pids: int) -> None:
        for d in self.dirs:
            d.mkdir()
        if kind == "v2":
            self._write(self.dirs[0] / "memory.max", memory)
            with contextlib.suppress(OSError):
                self._write(self.dirs[0] / "memory.swap.max", 0)
            self._write(self.dirs[0] / "pids.max", pids)
        else:
            self._write(self.dirs[0] / "memory.limit_in_bytes", memory)
            with contextlib.suppress(OSError):  # only with swap accounting
                self._write(self.dirs[0] / "memory.memsw.limit_in_bytes", memory)
            self._write(self.dirs[1] / "pids.max", pids)

    @staticmethod
    def _write(path: Path, value: int) -> None:
        path.write_text(str(value))

    def oom_killed(self) -> bool:
        d = self.dirs[0]
        with contextlib.suppress(OSError, ValueError):
            f = "memory.events" if self.kind == "v2" else "memory.oom_control"
            for line in (d / f).read_text().splitlines():
                k, _, v = line.partition(" ")
                if k == "oom_kill" and int(v) > 0:
                    return True
        return False

    def pids(self) -> set[int]:
        pids: set[int] = set()
        for p in (str(d / "cgroup.procs") for d in self.dirs):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(x) for x in Path(p).read_text().split()}
        return pids

    def kill(self, spare: int | None = None) -> None:
        """SIGKILL the tree, sparing ``spare`` (the outer bwrap, which reaps its child)."""
        for pid in self.pids() - {spare}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def kill_and_remove(self) -> None:
        for _ in range(25):
            if not self.pids():
                break
            self.kill()
            time.sleep(0.02)
        with _PENDING_LOCK:
            _PENDING.extend(self.dirs)
        _remove_pending()


_PENDING: list[Path] = []  # cgroups that still held a process (a zombie not yet reaped)
_PENDING_LOCK = threading.Lock()  # runs finish on several threads (thread pools, asyncio.to_thread)


def _remove_pending() -> None:
    with _PENDING_LOCK:
        for d in list(_PENDING):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                continue
            _PENDING.remove(d)


@functools.lru_cache(maxsize=1)
def _sweep_stale() -> None:
    """Once per process: remove empty smoa cgroups over an hour old (a caller killed -9)."""
    for parent in (CGROOT, CGROOT / "memory", CGROOT / "pids"):
        with contextlib.suppress(OSError):
            for d in parent.glob("smoa-sbx-*"):
                with contextlib.suppress(OSError):
                    if time.time() - d.stat().st_mtime > 3600 and \
                            not (d / "cgroup.procs").read_text().strip():
                        d.rmdir()


@atexit.register
def _remove_pending_at_exit() -> None:
    for _ in range(20):
        _remove_pending()
        if not _PENDING:
            break
        time.sleep(0.05)


