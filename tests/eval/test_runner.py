"""The evaluation runner and its results store, on the scripted backend and a real
(loopback) OpenAI-compatible server; one test SIGKILLs a run and resumes it."""

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smoa.eval import runner as runner_mod
from smoa.eval.benchmarks.base import Item, JudgedBenchmark, Score
from smoa.eval.runner import arun_eval, run_eval
from smoa.eval.store import ResultsStore, Row
from smoa.testing import ScriptedBackend, ServerProcess, mixture_responder
from smoa.types import BackendError

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def data_dir() -> Path:
    d = Path(os.environ.get("SMOA_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (d / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found under {d}")
    return d


def gsm8k_backend(latency_s=0.0):
    """Proposers give the item's right answer for even seeds; the aggregator repeats proposal 1."""

    def propose(req):
        return f"Let me think. #### {req.settings.seed}"

    def aggregate(req):
        last = req.messages[-1]["content"].split("<<<answer ")[-1]  # the last answer's block
        return "Combined: " + last.split(">>>", 1)[1].split("<<<end of answer")[0].strip()[:200]

    return ScriptedBackend(responder=mixture_responder(propose=propose, aggregate=aggregate), latency_s=latency_s)


# ---------------------------------------------------------------------------
# store


def test_store_keeps_finished_rows_and_replaces_errors(tmp_path):
    with ResultsStore(tmp_path) as st:
        assert st.put(Row("b", "m", "i1", answer="a", score=1.0, correct=True, run_id="r1"))
        assert not st.put(Row("b", "m", "i1", answer="other", score=0.0, run_id="r2"))  # finished: kept
        assert st.put(Row("b", "m", "i2", error="boom", run_id="r1"))
        assert st.done("b", "m") == {"i1"}
        assert st.put(Row("b", "m", "i2", answer="ok", score=0.0, correct=False, run_id="r2"))  # error: retried
        rows = {r["item_id"]: r for r in st.rows("b", "m")}
        assert rows["i1"]["answer"] == "a" and rows["i1"]["run_id"] == "r1" and rows["i1"]["correct"] is True
        assert rows["i2"]["error"] is None and rows["i2"]["run_id"] == "r2"
        assert st.count() == 2
    # the UNIQUE constraint is in the file itself
    db = sqlite3.connect(tmp_path / "results.sqlite")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO results (benchmark, method, item_id, created_at) VALUES ('b', 'm', 'i1', 0)")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _copy_main_file_only(src: Path, dst: Path) -> Path:
    """What a backup, a commit or a killed session keeps: results.sqlite without its -wal."""
    dst.mkdir()
    (dst / "results.sqlite").write_bytes((src / "results.sqlite").read_bytes())
    return dst


def test_store_checkpoints_so_the_main_file_alone_holds_the_rows(tmp_path):
    live = tmp_path / "live"
    with ResultsStore(live) as st:
        st.start_run("r1", "b", ["m"], {})
        for i in range(3):
            st.put(Row("b", "m", f"i{i}", answer="a", score=1.0, correct=True, run_id="r1"))
        st.put_setup("b", "m", "roles", {"roles": ["x"]})
        assert (live / "results.sqlite-wal").exists()  # still open: WAL mode, the run goes on
        copy = _copy_main_file_only(live, tmp_path / "copy")
        with ResultsStore(copy) as back:
            assert back.done("b", "m") == {"i0", "i1", "i2"}
            assert back.get_setup("b", "m", "roles") == {"roles": ["x"]}
            assert [r["run_id"] for r in back.runs()] == ["r1"]


def test_store_checkpoint_neither_waits_for_nor_breaks_a_reader(tmp_path):
    live = tmp_path / "live"
    with ResultsStore(live) as st:
        st.put(Row("b", "m", "i0", answer="a", score=1.0, run_id="r1"))
        reader = sqlite3.connect(live / "results.sqlite", isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM results").fetchone()[0] == 1  # holds a snapshot
        t0 = time.monotonic()
        assert st.put(Row("b", "m", "i1", answer="a", score=1.0, run_id="r1"))  # no wait, no error
        assert time.monotonic() - t0 < 5  # the connection's busy timeout is 30 s: PASSIVE never waits
        assert reader.execute("SELECT count(*) FROM results").fetchone()[0] == 1  # its snapshot holds
        reader.execute("COMMIT")
        reader.close()
        st.put(Row("b", "m", "i2", answer="a", score=1.0, run_id="r1"))  # the next write folds them all
        copy = _copy_main_file_only(live, tmp_path / "copy")
        with ResultsStore(copy) as back:
            assert back.done("b", "m") == {"i0", "i1", "i2"}


# ---------------------------------------------------------------------------
# runner on the scripted backend


def test_run_eval_writes_rows_and_resumes_without_redoing(tmp_path):
    data = data_dir()
    be = gsm8k_backend()
    s1 = run_eval("gsm8k", "single,moa,smoa", data=data, limit=4, out=tmp_path, backends={"local": be}, n=3, k=2, progress=False)
    assert (s1["total"], s1["ran"], s1["written"], s1["errors"]) == (12, 12, 12, 0)
    calls_after_first = len(be.calls)
    s2 = run_eval("gsm8k", "single,moa,smoa", data=data, limit=6, out=tmp_path, backends={"local": be}, n=3, k=2, progress=False)
    assert (s2["skipped"], s2["ran"]) == (12, 6)
    s3 = run_eval("gsm8k", "single,moa,smoa", data=data, limit=6, out=tmp_path, backends={"local": be}, n=3, k=2, progress=False)
    assert (s3["skipped"], s3["ran"]) == (18, 0)
    with ResultsStore(tmp_path) as st:
        rows = list(st.rows("gsm8k", with_trace=True))
        assert len(rows) == 18 and len({(r["method"], r["item_id"]) for r in rows}) == 18
        first = {r["run_id"] for r in rows if r["item_index"] < 4}
        assert first == {s1["run_id"]}  # rows of the first run were not redone
        # roles were generated once and reused by the resumed run
        assert st.get_setup("gsm8k", "smoa", "roles")["source"] == "generated"
    role_calls = [c for c in be.calls if c.json_schema and "roles" in c.json_schema.get("properties", {})]
    assert len(role_calls) == 1
    assert len(be.calls) > calls_after_first
    for r in rows:
        t = r["trace"]
        # tokens and calls in the row are the trace's own accounting
        assert r["total_tokens"] == t["cost"]["total"]["total_tokens"] > 0
        assert r["calls"] == len(t["calls"])
        assert set(r["tokens_by_stage"]) == {c["stage"] for c in t["calls"]}
        assert r["score"] in (0.0, 1.0) and r["score_detail"]["ref"]
    smoa = [r for r in rows if r["method"] == "smoa"]
    assert all(set(r["tokens_by_stage"]) >= {"propose", "judge", "aggregate"} for r in smoa)
    assert all("role" not in r["tokens_by_stage"] for r in smoa)  # one-off, kept in setup


def test_scores_come_from_the_benchmark(tmp_path):
    data = data_dir()
    items = runner_mod.get_benchmark("gsm8k").load(data, limit=3)
    refs = {it.prompt: it.reference for it in items}

    def propose(req):
        return f"#### {refs[req.messages[-1]['content']]}"

    be = ScriptedBackend(responder=mixture_responder(propose=propose))
    s = run_eval("gsm8k", ["single"], data=data, limit=3, out=tmp_path, backends={"local": be}, progress=False)
    assert s["per_method"]["single"]["mean_score"] == 1.0


def test_global_concurrency_limit_across_items_and_methods(tmp_path):
    data = data_dir()
    be = gsm8k_backend(latency_s=0.05)
    run_eval("gsm8k", "single,self-moa", data=data, limit=8, out=tmp_path, backends={"local": be}, n=2,
             concurrency=3, progress=False)
    # self-moa fans out 2 calls per item: at most 3 items in flight => at most 6 calls
    assert 2 <= be.max_in_flight <= 6
    be2 = gsm8k_backend(latency_s=0.05)
    run_eval("gsm8k", "single", data=data, limit=8, out=tmp_path / "b", backends={"local": be2}, concurrency=3, progress=False)
    assert be2.max_in_flight == 3


def test_failed_items_are_stored_with_error_and_retried_on_rerun(tmp_path):
    data = data_dir()
    bad = ScriptedBackend(responder=lambda req: BackendError("endpoint down"))
    s = run_eval("gsm8k", "single", data=data, limit=3, out=tmp_path, backends={"local": bad}, progress=False)
    assert s["errors"] == 3
    with ResultsStore(tmp_path) as st:
        rows = list(st.rows(with_trace=True))
        assert all("endpoint down" in r["error"] and r["score"] is None for r in rows)
        assert all(r["trace"]["calls"][0]["error"] for r in rows)  # the failed call is in the trace
    s2 = run_eval("gsm8k", "single", data=data, limit=3, out=tmp_path, backends={"local": gsm8k_backend()}, progress=False)
    assert (s2["skipped"], s2["ran"], s2["errors"]) == (0, 3, 0)
    with ResultsStore(tmp_path) as st:
        assert st.count(errors=True) == 0 and st.count() == 3


class TinyJudged(JudgedBenchmark):
    name = "tiny-judged"
    verdict_schema = {"type": "object", "properties": {"rating": {"type": "integer"}}, "required": ["rating"]}

    def load(self, path=None, limit=None, offset=0):
        items = [Item(id=f"t/{i}", prompt=f"Say something nice #{i}", reference=None) for i in range(4)]
        return items[offset:][:limit]

    def judge_messages(self, item, answer_text, **kw):
        return [{"role": "user", "content": f"RATE THIS: {item.prompt} -> {answer_text}"}]

    def parse_verdict(self, item, verdict_text, **kw):
        try:
            v = json.loads(verdict_text)["rating"]
        except Exception:
            return self._fallback(verdict_text, "unreadable")
        return Score(float(v), None, {"rating": v})


def test_judged_benchmark_uses_a_separate_judge_and_keeps_its_raw_verdict(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_mod, "get_benchmark", lambda name: TinyJudged())
    method_be = ScriptedBackend(responder=mixture_responder(propose="a nice answer"))
    judge_be = ScriptedBackend(responder=lambda req: '{"rating": 4}' if "#0" not in req.messages[0]["content"] else "??")
    s = run_eval("tiny-judged", "single", out=tmp_path, backends={"local": method_be, "judgebe": judge_be},
                 judge_backend="judgebe", judge_model="judge-x", progress=False)
    assert s["errors"] == 0
    assert all(r.messages[0]["content"].startswith("RATE THIS") for r in judge_be.calls)
    assert all(r.model == "judge-x" and r.settings.temperature == 0.0 for r in judge_be.calls)
    assert not any(r.messages[0]["content"].startswith("RATE THIS") for r in method_be.calls)
    with ResultsStore(tmp_path) as st:
        rows = list(st.rows())
    assert len(rows) == 4
    assert sorted(r["judge_verdict"] for r in rows) == ["??"] + ['{"rating": 4}'] * 3
    assert all(r["judge_tokens"] > 0 for r in rows)
    assert all("eval_judge" not in r["tokens_by_stage"] for r in rows)  # not the method's cost
    assert sorted(r["score"] for r in rows) == [0.0, 4.0, 4.0, 4.0]  # fallback value for "??"


def test_unknown_method_and_benchmark_are_clear_errors(tmp_path):
    from smoa.types import ConfigError

    with pytest.raises(ConfigError, match="unknown method or pipeline 'dense'"):
        run_eval("gsm8k", "single,dense", data=data_dir(), limit=1, out=tmp_path, backends={"local": gsm8k_backend()})
    with pytest.raises(ConfigError, match="nope"):
        run_eval("nope", "single", out=tmp_path, backends={"local": gsm8k_backend()})


def test_async_api_inside_a_running_loop(tmp_path):
    async def main():
        return await arun_eval("gsm8k", ["single"], data=data_dir(), limit=2, out=tmp_path,
                               backends={"local": gsm8k_backend()}, progress=False)

    assert asyncio.run(main())["written"] == 2


def test_progress_bar_line():
    import io

    from smoa.eval.progress import Progress

    buf = io.StringIO()
    p = Progress(total=10, done=4, label="gsm8k", stream=buf, enabled=True, min_interval_s=0)
    p.update(Row("b", "m", "i", total_tokens=1500))
    line = p.line()
    assert "5/10" in line and "1.5k tok" in line and "ETA" in line
    p.close()
    assert buf.getvalue().startswith("\r") and buf.getvalue().endswith("\n")
    quiet = io.StringIO()
    q = Progress(total=3, stream=quiet)  # not a TTY: silent
    q.update()
    q.close()
    assert quiet.getvalue() == ""


# ---------------------------------------------------------------------------
# a real server, a real subprocess, SIGKILL, resume


@pytest.fixture(scope="module")
def slow_server():
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--latency", "0.15"]) as srv:
        yield srv


def write_config(path: Path, base_url: str) -> Path:
    path.write_text(
        f"""
default = "eval"

[backends.fake]
type = "openai"
base_url = "{base_url}"
max_retries = 0

[pipelines.eval]
method = "moa"
n = 2
max_rounds = 2
agent = {{ backend = "fake", model = "m1" }}
""",
        encoding="utf-8",
    )
    return path


def _eval_argv(cfg: Path, out: Path, data: Path, limit: int) -> list[str]:
    return [sys.executable, "-m", "smoa", "eval", "--benchmark", "gsm8k", "--methods", "single,moa,smoa",
            "--data", str(data), "--limit", str(limit), "--config", str(cfg), "--out", str(out),
            "--concurrency", "2", "--json"]


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


@pytest.mark.server
def test_sigkill_mid_run_then_rerun_scores_every_item_exactly_once(tmp_path, slow_server):
    data = data_dir()
    cfg = write_config(tmp_path / "eval.toml", slow_server.base_url)
    out = tmp_path / "out"
    db = out / "results.sqlite"
    limit = 8
    total = limit * 3
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(_eval_argv(cfg, out, data, limit), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _count(db) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _count(db)
    assert 4 <= killed_at < total
    con = sqlite3.connect(db)
    before = {(m, i): r for m, i, r in con.execute("SELECT method, item_id, run_id FROM results")}
    con.close()

    res = subprocess.run(_eval_argv(cfg, out, data, limit), env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["skipped"] == killed_at and summary["ran"] == total - killed_at and summary["errors"] == 0

    con = sqlite3.connect(db)
    rows = con.execute("SELECT method, item_id, run_id, error, score FROM results").fetchall()
    con.close()
    assert len(rows) == total
    keys = [(m, i) for m, i, *_ in rows]
    assert len(set(keys)) == total  # every (method, item) exactly once
    assert {m for m, *_ in rows} == {"single", "moa", "smoa"}
    assert all(err is None and score is not None for *_, err, score in rows)
    for m, i, run_id, *_ in rows:  # what the killed run finished was not redone
        if (m, i) in before:
            assert run_id == before[(m, i)]
        else:
            assert run_id == summary["run_id"]

    # and the report reads it
    rep = subprocess.run([sys.executable, "-m", "smoa", "report", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    md = (out / "report.md").read_text()
    assert "| smoa" in md and "| moa" in md and (out / "gsm8k_quality_vs_tokens.png").stat().st_size > 1000


def test_cached_calls_still_count_at_full_cost():
    from smoa.eval.runner import method_cost
    from smoa.trace import CallRecord

    calls = [
        CallRecord(id=0, layer=1, stage="propose", agent="a", role=None, backend="b", model="m", messages=[],
                   prompt_tokens=10, completion_tokens=5, cached=True),
        CallRecord(id=1, layer=2, stage="aggregate", agent="g", role=None, backend="b", model="m", messages=[],
                   prompt_tokens=20, completion_tokens=5),
    ]
    c = method_cost(calls)
    assert c["total"]["total_tokens"] == 40 and c["total"]["cached"] == 1
    assert c["by_stage"]["propose"]["total_tokens"] == 15 and c["by_stage"]["propose"]["cached"] == 1


def test_the_config_in_docs_reproduce_builds_every_method(monkeypatch):
    import re
    import tomllib

    from smoa.config import ConfigFile
    from smoa.eval.runner import EvalSettings, build_judge, build_pipelines

    text = (REPO / "docs" / "reproduce.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    monkeypatch.setenv("TOGETHER_API_KEY", "x")
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    cfg = ConfigFile(**tomllib.loads(block))
    st = EvalSettings(benchmark="gsm8k", methods=["single", "moa", "smoa", "mad", "self-moa"], config=cfg,
                      judge_backend="openai", judge_model="gpt-4o")
    pipes, shared = build_pipelines(st, runner_mod.get_benchmark("gsm8k"))
    assert [p.n for p in pipes.values()] == [1, 4, 4, 4, 4]
    assert pipes["smoa"].k == 2 and pipes["smoa"].max_rounds == 2
    assert {a.model for a in pipes["moa"].proposers} == {
        "Qwen/Qwen2-72B-Instruct", "Qwen/Qwen1.5-72B-Chat", "mistralai/Mixtral-8x22B-Instruct-v0.1", "databricks/dbrx-instruct"}
    assert pipes["smoa"].judge.model == "Qwen/Qwen2-72B-Instruct"
    assert build_judge(st, shared).proposers[0].model == "gpt-4o"


def _seeded_config(smoa: bool = False):
    """A moa pipeline with its own seed 7 (and, with smoa, a smoa pipeline with none)."""
    import tomllib

    from smoa.config import ConfigFile

    text = """
[backends.local]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
[pipelines.moa]
method = "moa"
n = 3
seed = 7
agent = { backend = "local", model = "m" }
"""
    if smoa:
        text += """[pipelines.smoa]
method = "smoa"
n = 3
k = 2
agent = { backend = "local", model = "m" }
"""
    return ConfigFile(**tomllib.loads(text))


def test_a_pipelines_own_seed_holds_unless_seed_is_given():
    """Study B's configs set `seed = 7` per pipeline; the eval's default used to replace it
    with 0 on every pipeline, silently. Now: the config's seed, else 0; --seed beats both."""
    from smoa.eval.runner import EvalSettings, build_pipelines

    cfg = _seeded_config(smoa=True)
    bench = runner_mod.get_benchmark("gsm8k")

    def seeds(**ov):
        st = EvalSettings(benchmark="gsm8k", methods=["moa", "smoa"], config=cfg, overrides=ov)
        pipes, _ = build_pipelines(st, bench)
        return {m: (p.seed, [a.settings.seed for a in p.proposers]) for m, p in pipes.items()}

    assert seeds(seed=None) == {"moa": (7, [7, 8, 9]), "smoa": (0, [0, 1, 2])}  # the CLI without --seed
    assert seeds(seed=3) == {"moa": (3, [3, 4, 5]), "smoa": (3, [3, 4, 5])}


def test_run_eval_keeps_the_configs_seed(tmp_path, shared_data):
    """The same through run_eval, as `smoa eval --config` calls it: the seed the traces record."""
    cfg = _seeded_config()
    be = gsm8k_backend()
    for out, ov, want in (("own", {}, 7), ("given", {"seed": 5}, 5)):
        run_eval("gsm8k", ["moa", "single"], data=shared_data, limit=1, out=tmp_path / out, config=cfg,
                 backends={"local": be}, progress=False, **ov)
        with ResultsStore(tmp_path / out) as st:
            got = {r["method"]: r["trace"]["config"]["seed"] for r in st.rows("gsm8k", with_trace=True)}
        assert got == {"moa": want, "single": want}  # single: the config's default pipeline (moa) switched


def _judged_run(tmp_path, name, judge_reply, limit=2):
    method_be = ScriptedBackend(responder=mixture_responder(propose=lambda r: "reply to: " + r.messages[-1]["content"][:30]))
    judge_be = ScriptedBackend(responder=lambda r: judge_reply(r) if callable(judge_reply) else judge_reply)
    s = run_eval(name, "single", data=data_dir(), limit=limit, out=tmp_path, backends={"local": method_be, "j": judge_be},
                 judge_backend="j", judge_model="judge", progress=False)
    with ResultsStore(tmp_path) as st:
        rows = list(st.rows(with_trace=True))
    return s, rows, method_be, judge_be


def test_pairwise_sets_are_judged_in_both_orders(tmp_path):
    # a judge that always prefers the first reply: the two orders cancel out to a tie
    s, rows, _, judge_be = _judged_run(tmp_path, "alpaca-eval", '{"reason": "first", "winner": "A"}')
    assert s["errors"] == 0 and len(rows) == 2
    assert len(judge_be.calls) == 4
    for r in rows:
        assert r["score"] == 0.5
        assert [j["swap"] for j in r["score_detail"]["judgements"]] == [False, True]
        assert len(json.loads(r["judge_verdict"])) == 2


def test_multi_turn_items_are_answered_turn_by_turn(tmp_path):
    s, rows, method_be, judge_be = _judged_run(tmp_path, "mt-bench", '{"reason": "fine", "rating": 7}')
    assert s["errors"] == 0 and len(rows) == 2
    assert len(method_be.calls) == 4 and len(judge_be.calls) == 4  # 2 turns x 2 items
    second = [c for c in method_be.calls if len(c.messages) == 3]
    assert len(second) == 2 and all([m["role"] for m in c.messages] == ["user", "assistant", "user"] for c in second)
    for r in rows:
        assert r["score"] == 7.0 and len(r["score_detail"]["answers"]) == 2
        assert len(r["trace"]["turns"]) == 2 and r["calls"] == 2


def test_just_eval_uses_the_judge_schema_of_each_item(tmp_path):
    def judge(req):
        props = req.json_schema["properties"]
        return json.dumps({k: {"reason": "ok", "score": 4} for k in props})

    s, rows, _, judge_be = _judged_run(tmp_path, "just-eval", judge)
    assert s["errors"] == 0
    assert all(r["score"] == 4.0 and r["judge_verdict"].startswith("{") for r in rows)


def test_a_crashed_scorer_is_rerun_from_the_stored_answer(tmp_path, monkeypatch):
    data = data_dir()
    bench = runner_mod.get_benchmark("gsm8k")
    real = bench.score

    def broken(item, answer):
        raise ArithmeticError("scorer bug")

    monkeypatch.setattr(bench, "score", broken)
    be = gsm8k_backend()
    s = run_eval("gsm8k", "single", data=data, limit=3, out=tmp_path, backends={"local": be}, progress=False)
    assert s["errors"] == 3
    with ResultsStore(tmp_path) as st:
        assert all(r["error"].startswith("scoring failed: ArithmeticError") and r["answer"] for r in st.rows())
    calls = len(be.calls)
    s1b = run_eval("gsm8k", "single", data=data, limit=3, out=tmp_path, backends={"local": be}, progress=False)
    assert (s1b["rescored"], s1b["ran"]) == (0, 0)  # still broken: kept, not answered again
    assert len(be.calls) == calls
    monkeypatch.setattr(bench, "score", real)
    s2 = run_eval("gsm8k", "single", data=data, limit=3, out=tmp_path, backends={"local": be}, progress=False)
    assert (s2["rescored"], s2["ran"], s2["skipped"]) == (3, 0, 3)
    assert len(be.calls) == calls  # no new model calls
    with ResultsStore(tmp_path) as st:
        rows = list(st.rows())
        assert all(r["error"] is None and r["score"] in (0.0, 1.0) and r["run_id"] == s["run_id"] for r in rows)
