"""One eval per output folder: a second `smoa eval` on it is refused with one line, and the
lock dies with its owner (SIGKILL included), so a rerun resumes without redoing rows.

Real processes: two `smoa eval` commands against the loopback fake server."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smoa.eval.store import ResultsStore
from smoa.testing import ServerProcess
from smoa.types import SmoaError

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 10

CONFIG = """\
[backends.fake]
type = "openai"
base_url = "{url}"
retries = 0

[pipelines.single]
method = "single"
agent = {{ backend = "fake", model = "m" }}
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SMOA_NO_TRACE_STORE": "1"}


def _eval_argv(tmp: Path) -> list[str]:
    return [sys.executable, "-m", "smoa", "eval", "-b", "gsm8k", "--data", str(tmp / "gsm.jsonl"), "-m", "single",
            "-c", str(tmp / "smoa.toml"), "-o", str(tmp / "out"), "-j", "1", "--json", "--no-progress"]


def _rows(out: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(out / "results.sqlite")
    try:
        return db.execute("SELECT item_id, COUNT(*) FROM results GROUP BY item_id").fetchall()
    finally:
        db.close()


def _wait_for_lock(lock: Path, pid: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        if lock.exists() and lock.read_text().strip() == str(pid):
            return
        time.sleep(0.1)
    pytest.fail("the first eval never took the lock")


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "gsm.jsonl").write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"}) + "\n"
                for i in range(ITEMS)), encoding="utf-8")
    return tmp_path


def test_second_eval_on_a_folder_is_refused_and_a_killed_one_leaves_no_stale_lock(folder):
    lock = folder / "out" / "results.sqlite.lock"
    # slow upstream: the first eval holds the folder for about ITEMS * 2 s
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--latency", "2"]) as slow:
        (folder / "smoa.toml").write_text(CONFIG.format(url=slow.base_url), encoding="utf-8")
        first = subprocess.Popen(_eval_argv(folder), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_for_lock(lock, first.pid, first)
            second = subprocess.run(_eval_argv(folder), env=_env(), capture_output=True, timeout=120)
            assert first.poll() is None, "the first eval ended before the second tried: the test proves nothing"
            err = second.stderr.decode()
            assert second.returncode == 2, err
            assert "Traceback" not in err
            assert err.splitlines() == [
                f"smoa: error: another smoa eval (pid {first.pid}) is writing to {folder / 'out'}: wait for it to "
                "finish (a rerun then resumes where it stopped), or give another --out"
            ]
            assert second.stdout == b""
            # the first one dies without any chance to clean up
            while not _rows(folder / "out"):
                assert first.poll() is None
                time.sleep(0.1)
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(30)
            for s in (first.stdout, first.stderr):
                if s:
                    s.close()
    done_before = _rows(folder / "out")
    assert 0 < len(done_before) < ITEMS
    assert lock.exists() and lock.read_text().strip() == str(first.pid)  # the pid stays; the lock does not
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as fast:
        (folder / "smoa.toml").write_text(CONFIG.format(url=fast.base_url), encoding="utf-8")
        rerun = subprocess.run(_eval_argv(folder), env=_env(), capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == len(done_before)  # nothing already done was redone
    assert summary["ran"] == ITEMS - len(done_before)
    rows = _rows(folder / "out")
    assert len(rows) == ITEMS and all(n == 1 for _, n in rows)


def test_lock_is_per_folder_and_released_on_close(tmp_path):
    with ResultsStore(tmp_path / "a", exclusive=True):
        with pytest.raises(SmoaError, match=rf"another smoa eval \(pid {os.getpid()}\) is writing to"):
            ResultsStore(tmp_path / "a", exclusive=True)
        with ResultsStore(tmp_path / "a") as reader:  # readers (smoa report) are not held back
            assert reader.count() == 0
        with ResultsStore(tmp_path / "b", exclusive=True):
            pass
    with ResultsStore(tmp_path / "a", exclusive=True):
        pass


def test_a_refused_store_is_left_byte_for_byte(tmp_path):
    bad = tmp_path / "results.sqlite"
    db = sqlite3.connect(bad)
    db.execute("CREATE TABLE results (x INTEGER)")
    db.execute("INSERT INTO results VALUES (1)")
    db.commit()
    db.close()
    before = bad.read_bytes()
    with pytest.raises(SmoaError, match="is not a smoa results store"):
        ResultsStore(tmp_path, exclusive=True)
    assert bad.read_bytes() == before
    assert not (tmp_path / "results.sqlite-wal").exists()
    # the lock was given back with the refusal
    (tmp_path / "results.sqlite").unlink()
    with ResultsStore(tmp_path, exclusive=True):
        pass
