"""Calls stopped by max_tokens (smoa.eval.budget): pure functions, then through a scripted eval."""

import re

from smoa.eval.budget import WARN_FINAL_SHARE, cutoff_summary, item_cutoffs, warning
from smoa.eval.report import build_report, write_report
from smoa.eval.runner import get_benchmark, run_eval
from smoa.testing import ScriptedBackend, mixture_responder
from smoa.types import Completion


def call(i, stage, finish, error=None):
    return {"id": i, "stage": stage, "finish_reason": finish, "error": error}


def smoa_trace(cut_final: bool, cut_props: int = 1):
    calls = [call(i, "propose", "length" if i < cut_props else "stop") for i in range(3)]
    calls += [call(3, "judge", "stop"), call(4, "moderate", "stop"), call(5, "aggregate", "length" if cut_final else "stop")]
    return {"calls": calls, "finish": {"kind": "aggregate", "call_id": 5}}


def test_item_cutoffs_counts_stages_and_the_final_call():
    x = item_cutoffs(smoa_trace(cut_final=True))
    assert x == {"stages": {"propose": [3, 1], "judge": [1, 0], "moderate": [1, 0], "aggregate": [1, 1]}, "final_cut": True}
    assert item_cutoffs(smoa_trace(cut_final=False, cut_props=3))["final_cut"] is False
    assert item_cutoffs(None) is None and item_cutoffs({}) is None


def test_a_cut_proposal_is_not_a_cut_final_answer():
    # the final answer is the aggregate's: a proposer that ran out of tokens does not make it cut
    tr = smoa_trace(cut_final=False, cut_props=2)
    assert item_cutoffs(tr)["final_cut"] is False
    assert item_cutoffs(tr)["stages"]["propose"] == [3, 2]


def test_failed_calls_and_votes():
    tr = {"calls": [call(0, "propose", None, error="timeout"), call(1, "propose", "length"), call(2, "propose", "stop")],
          "finish": {"kind": "vote"}}
    x = item_cutoffs(tr)
    assert x["stages"] == {"propose": [2, 1]}  # the failed call answered nothing
    assert x["final_cut"] is None  # a vote has no final call to cut
    # a final call that failed is not counted as cut
    tr = {"calls": [call(0, "propose", None, error="boom")], "finish": {"kind": "single", "call_id": 0}}
    assert item_cutoffs(tr)["final_cut"] is None


def test_multi_turn_items_count_every_turn():
    t1 = {"calls": [call(0, "propose", "stop")], "finish": {"kind": "single", "call_id": 0}}
    t2 = {"calls": [call(0, "propose", "length")], "finish": {"kind": "single", "call_id": 0}}
    x = item_cutoffs({"turns": [t1, t2]})
    assert x == {"stages": {"propose": [2, 1]}, "final_cut": True}
    assert item_cutoffs({"turns": [t1, t1]})["final_cut"] is False


def test_summary_and_the_warning_threshold():
    rows = [{"error": None, "trace": smoa_trace(cut_final=i < 3)} for i in range(10)]
    rows.append({"error": "boom", "trace": smoa_trace(cut_final=True)})  # errors are left out
    s = cutoff_summary(rows)
    assert (s["items"], s["final_items"], s["final_cut"]) == (10, 10, 3)
    assert s["final_cut_share"] == 0.3
    assert s["by_stage"]["propose"] == {"calls": 30, "cut": 10, "share": 10 / 30}
    assert (s["calls"], s["calls_cut"]) == (60, 13)
    line = warning([("smoa", s), ("moa", None)])
    assert line.startswith("final answers stopped at max_tokens: smoa 3/10 (30%).") and " moa " not in line
    assert "raise max_tokens" in line
    # at or under the threshold: no warning
    n = 100
    at = cutoff_summary([{"error": None, "trace": smoa_trace(cut_final=i < n * WARN_FINAL_SHARE)} for i in range(n)])
    assert at["final_cut_share"] == WARN_FINAL_SHARE and warning([("smoa", at)]) is None
    assert cutoff_summary([{"error": None}]) is None


def test_report_shows_cut_answers_from_a_scripted_eval(tmp_path, shared_data):
    """single on 4 GSM8K items; the backend says items 0 and 2 ran out of tokens."""
    items = get_benchmark("gsm8k").load(shared_data, limit=4)
    cut = {items[0].prompt, items[2].prompt}

    def propose(req):
        q = req.messages[-1]["content"]
        prompt = next(p for p in (it.prompt for it in items) if p in q)
        if prompt in cut:
            return Completion(text="Step one, step two, and", prompt_tokens=10, completion_tokens=5,
                              model=req.model, finish_reason="length")
        return Completion(text="Done. #### 1", prompt_tokens=10, completion_tokens=4, model=req.model, finish_reason="stop")

    be = ScriptedBackend(responder=mixture_responder(propose=propose))
    run_eval("gsm8k", ["single"], data=shared_data, limit=4, out=tmp_path, backends={"local": be}, progress=False)
    (rep,) = [r for r in build_report(tmp_path) if r.benchmark == "gsm8k"]
    s = rep.methods[0].cutoffs
    assert (s["final_items"], s["final_cut"]) == (4, 2)
    assert rep.warnings and "single 2/4 (50%)" in rep.warnings[0]
    out = write_report(tmp_path, plots=False)
    md = (tmp_path / "report.md").read_text()
    assert "Calls stopped by max_tokens" in md and re.search(r"\| single \| 2 / 4 \(50%\) \| 2 / 4 \(50%\) \|", md)
    assert "**Cut off:** final answers stopped at max_tokens: single 2/4 (50%)" in md
    assert "Cut off:" in (tmp_path / "report.html").read_text()
    summary = out["benchmarks"][0]
    assert summary["methods"]["single"]["cut_at_max_tokens"]["final_cut"] == 2 and summary["warnings"]
