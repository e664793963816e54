"""The trace store (SQLite), its opt-out, and the CLI commands that read it."""

import asyncio
import json
import subprocess
import sys

import pytest

from smoa import resolve
from smoa.engine import Engine
from smoa.testing import ScriptedBackend, mixture_responder
from smoa.tracestore import MemoryStore, TraceStore, default_path, open_store


def a_trace(q="What is 2+2?", **kw):
    be = ScriptedBackend(responder=mixture_responder())
    pipe = resolve(method="smoa", instances={"local": be}, n=3, k=2, seed=1, **kw)
    return asyncio.run(Engine(pipe).run(q)).trace


def test_save_get_list(tmp_path):
    store = TraceStore(tmp_path / "deep" / "t.sqlite")
    t1, t2 = a_trace("first question"), a_trace("second question")
    t2.created_at = t1.created_at + 5
    store.save(t1.to_dict(), "cli")
    store.save(t2.to_dict(), "server")
    assert store.count() == 2
    rows = store.recent()
    assert [r["id"] for r in rows] == [t2.id, t1.id]
    r = rows[0]
    assert r["query"] == "second question" and r["answer"] == "final answer" and r["source"] == "server"
    assert r["total_tokens"] == t2.cost()["total"]["total_tokens"] > 0 and r["calls"] == len(t2.calls)
    assert store.get(t1.id) == json.loads(json.dumps(t1.to_dict()))
    assert store.get(t1.id[:8])["id"] == t1.id  # a unique prefix works
    assert store.get("nope") is None
    store.save(t1.to_dict(), "cli")  # saving again replaces
    assert store.count() == 2
    assert [r["id"] for r in store.recent(limit=1, offset=1)] == [t1.id]


def test_memory_store_keeps_the_last_n():
    m = MemoryStore(capacity=2)
    ts = [a_trace(f"q{i}") for i in range(3)]
    for i, t in enumerate(ts):
        t.created_at += i
        m.save(t.to_dict())
    assert m.get(ts[0].id) is None and m.count() == 2
    assert [r["id"] for r in m.recent()] == [ts[2].id, ts[1].id]


def test_default_path_and_opt_out(tmp_path, monkeypatch):
    monkeypatch.delenv("SMOA_TRACE_STORE")
    monkeypatch.setenv("SMOA_HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / "traces.sqlite"
    monkeypatch.delenv("SMOA_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "smoa" / "traces.sqlite"
    monkeypatch.setenv("SMOA_NO_TRACE_STORE", "1")
    assert open_store() is None
    monkeypatch.setenv("SMOA_NO_TRACE_STORE", "0")
    assert open_store() is not None


def test_unwritable_store_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    from smoa.types import SmoaError

    with pytest.raises(SmoaError, match="cannot open the trace store .*SMOA_NO_TRACE_STORE=1"):
        TraceStore(tmp_path / "file" / "t.sqlite")


def smoa(*args, env=None):
    return subprocess.run([sys.executable, "-m", "smoa", *args], capture_output=True, text=True, timeout=120, env=env)


def test_trace_view_and_list_from_the_store(tmp_path, monkeypatch):
    t = a_trace("Which is larger, 9 or 11?")
    TraceStore(tmp_path / "traces.sqlite").save(t.to_dict(), "cli")  # the conftest points SMOA_TRACE_STORE here
    r = smoa("trace", "list")
    assert r.returncode == 0, r.stderr
    assert t.id[:12] in r.stdout and "Which is larger" in r.stdout
    out = tmp_path / "page.html"
    r = smoa("trace", "view", t.id[:10], "-o", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert 'id="trace-data"' in html and "Which is larger" in html
    # `smoa ask --json` output is accepted as well as a bare trace
    (tmp_path / "ask.json").write_text(json.dumps({"answer": "x", "trace": t.to_dict()}))
    r = smoa("trace", "view", str(tmp_path / "ask.json"))
    assert r.returncode == 0 and (tmp_path / "ask.html").is_file()


@pytest.mark.parametrize(
    "arg, needle",
    [("missing.json", "trace file not found"), ("0123456789ab", "no trace '0123456789ab'"), ("notjson.json", "is not JSON")],
)
def test_trace_view_errors_are_one_line(tmp_path, arg, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notjson.json").write_text("{")
    r = smoa("trace", "view", arg)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("smoa: error: ") and needle in r.stderr, r.stderr


def test_ask_saves_its_trace_unless_opted_out(tmp_path):
    import os

    from smoa.testing import ServerProcess

    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as fake:
        cfg = tmp_path / "smoa.toml"
        cfg.write_text(f'[backends.fake]\ntype = "openai"\nbase_url = "{fake.base_url}"\n\n'
                       '[pipelines.mix]\nmethod = "smoa"\nn = 3\nk = 2\nagent = { backend = "fake", model = "m" }\n')
        r = smoa("ask", "--config", str(cfg), "What is 3+4?")
        assert r.returncode == 0, r.stderr
        store = TraceStore(tmp_path / "traces.sqlite")
        rows = store.recent()
        assert len(rows) == 1 and rows[0]["source"] == "cli" and rows[0]["query"] == "What is 3+4?"
        assert f"smoa trace view {rows[0]['id'][:12]}" in r.stderr
        assert smoa("ask", "--config", str(cfg), "--no-store", "-q", "again").returncode == 0
        env = {**os.environ, "SMOA_NO_TRACE_STORE": "1"}
        assert smoa("ask", "--config", str(cfg), "-q", "and again", env=env).returncode == 0
        assert store.count() == 1
        # a failed query is saved too, with its error
        bad = tmp_path / "bad.toml"
        bad.write_text('[backends.dead]\ntype = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmax_retries = 0\n\n'
                       '[pipelines.x]\nmethod = "single"\nagent = { backend = "dead", model = "m" }\n')
        r = smoa("ask", "--config", str(bad), "hello")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
        assert store.count() == 2 and store.recent()[0]["error"]
