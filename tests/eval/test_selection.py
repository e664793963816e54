"""Judge and moderator figures (smoa.eval.selection): pure functions, then through a scripted eval."""

import json
import re

import pytest

from smoa.eval.report import build_report, write_report
from smoa.eval.runner import get_benchmark, run_eval
from smoa.eval.selection import item_selection, random_keep_rate, selection_summary
from smoa.testing import ScriptedBackend, mixture_responder


def test_random_keep_rate():
    assert random_keep_rate(3, 1, 2) == pytest.approx(2 / 3)
    assert random_keep_rate(4, 1, 2) == pytest.approx(0.5)
    assert random_keep_rate(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert random_keep_rate(3, 0, 2) == 0.0
    assert random_keep_rate(3, 3, 2) == 1.0
    assert random_keep_rate(2, 1, 5) == 1.0  # k over n keeps everything


def _layer(n, kept, shown, cands=None, stop=None, called=True):
    lay = {"layer": 1, "proposals": [{"index": i, "call_id": 10 * i} for i in range(1, n + 1)], "kept": kept}
    j = {"candidates": cands or list(range(1, n + 1)), "kept": kept}
    if called:
        j["shown_order"] = shown
    lay["judge"] = j
    if stop is not None:
        lay["moderator"] = {"stop": stop}
    return lay


def test_item_selection_reads_positions_recall_and_stop():
    trace = {"layers": [_layer(3, [3, 1], [3, 1, 2], stop=False), _layer(3, [2, 3], [1, 2, 3])], "stop_reason": "max_rounds"}
    correct = {"10": 0, "20": 1, "30": 0}  # only proposer 2 is right, in both layers
    sel = item_selection(trace, correct)
    a, b = sel["layers"]
    assert a["kept_correct"] is False and a["positions"] == [1, 2] and a["random"] == pytest.approx(2 / 3)
    assert b["kept_correct"] is True and b["positions"] == [2, 3]
    assert a["stop"] is False and "stop" not in b
    assert sel["oracle"] is True and sel["rounds"] == 2
    s = selection_summary([{"error": None, "trace": trace, "score_detail": {"proposals": correct}}])
    assert s["judge_recall"] == 0.5 and s["random_recall"] == pytest.approx(2 / 3)
    assert s["kept_positions"] == {1: 1, 2: 2, 3: 1}
    assert (s["continued_correct"], s["continued_wrong"], s["stopped_correct"], s["stopped_wrong"]) == (0, 1, 0, 0)


def test_keep_rate_by_model_and_by_proposer():
    """Mixture B's question: does the judge drop the weak model? One strong proposer (1) and
    two weak ones; the judge keeps 1 and one weak answer in each of two layers."""
    models = {1: "strong", 2: "weak", 3: "weak"}
    layers = [_layer(3, [1, 2], [2, 1, 3]), _layer(3, [3, 1], [1, 3, 2])]
    for lay in layers:
        for p in lay["proposals"]:
            p.update(agent=f"proposer-{p['index']}", model=models[p["index"]])
    layers.append(_layer(3, [1, 2], None, cands=[1, 2], called=False))  # no choice made: not counted
    for p in layers[-1]["proposals"]:
        p.update(agent=f"proposer-{p['index']}", model=models[p["index"]])
    scored = {"10": 1, "20": 0, "30": 0}
    s = selection_summary([{"error": None, "trace": {"layers": layers}, "score_detail": {"proposals": scored}}])
    assert s["kept_by_model"] == {"strong": {"shown": 2, "kept": 2}, "weak": {"shown": 4, "kept": 2}}
    assert s["kept_by_proposer"] == {"proposer-1": {"shown": 2, "kept": 2}, "proposer-2": {"shown": 2, "kept": 1},
                                     "proposer-3": {"shown": 2, "kept": 1}}
    # only call 10 is right (the helper gives every layer's proposals the call ids 10, 20, 30),
    # and every layer counts, the one where the judge chose nothing too
    assert s["correct_by_model"] == {"strong": {"1": {"proposals": 3, "correct": 3}},
                                     "weak": {"1": {"proposals": 6, "correct": 0}}}


def test_a_judge_that_was_not_called_is_not_counted_in_recall():
    trace = {"layers": [_layer(3, [1, 2], None, cands=[1, 2], called=False)]}
    s = selection_summary([{"error": None, "trace": trace, "score_detail": {"proposals": {"10": 1, "20": 0, "30": 0}}}])
    assert s["judge_decisions"] == 0 and s["judge_not_called"] == 1 and s["judge_recall"] is None
    assert s["oracle_accuracy"] == 1.0


def test_no_proposal_verdicts_no_figures():
    assert selection_summary([{"error": None, "trace": {"layers": []}, "score_detail": {}}]) is None


def _eval(tmp_path, data, pick_right: bool, limit=4):
    """n = 3 proposers, only proposer 2 ("expert 2") is right; the judge keeps 2 of 3, either
    always including the right one (pick_right) or always leaving it out."""
    items = get_benchmark("gsm8k").load(data, limit=limit)
    refs = {it.prompt: it.reference for it in items}

    def propose(req):
        # layer 1: the role as system prompt, the question as the message; later layers: the
        # question, the answers, then the role in one message after the panel's system prompt
        last = req.messages[-1]["content"]
        q = re.match(r"## The user's message\n(.*?)\n\n## Answers\n", last, re.S)
        ref = refs[q.group(1) if q else last]
        who = int(re.search(r"expert (\d+)\.", last if q else req.messages[0]["content"]).group(1))
        return f"Working. #### {ref if who == 2 else float(ref) + who}"  # distinct wrong answers

    def judge(req):
        prompt = req.messages[-1]["content"]
        m = re.search(r"## The user's message\n(.*?)\n\n## Candidates", prompt, re.S)
        ref = next(v for p, v in refs.items() if p.startswith(m.group(1)[:40]))
        labels = re.findall(r"<<<candidate (\d+) \w+>>>\n(.*?)\n<<<end of candidate", prompt, re.S)
        good = [int(lab) for lab, text in labels if text.strip().endswith(f"#### {ref}")]
        bad = [int(lab) for lab, _ in labels if int(lab) not in good]
        sel = (good + bad)[:2] if pick_right else bad[:2]
        return json.dumps({"reasoning": "scripted", "selected": sel})

    be = ScriptedBackend(responder=mixture_responder(propose=propose, judge=judge))
    run_eval("gsm8k", ["smoa"], data=data, limit=limit, out=tmp_path, backends={"local": be}, n=3, k=2,
             max_rounds=2, progress=False)
    rep = next(r for r in build_report(tmp_path) if r.benchmark == "gsm8k")
    return next(s for s in rep.methods if s.method == "smoa").selection


def test_judge_recall_through_a_scripted_eval(tmp_path, shared_data):
    good = _eval(tmp_path / "good", shared_data, pick_right=True)
    bad = _eval(tmp_path / "bad", shared_data, pick_right=False)
    for s in (good, bad):
        assert s["items"] == 4 and s["oracle_accuracy"] == 1.0
        assert s["random_recall"] == pytest.approx(2 / 3)
        assert s["judge_chances"] == s["judge_decisions"] >= 4
        assert sum(s["kept_positions"].values()) == 2 * s["judge_decisions"]
    assert good["judge_recall"] == 1.0 and bad["judge_recall"] == 0.0
    # only proposer 2 is right: the good judge keeps it every time, the bad one never
    d = good["judge_decisions"]
    assert good["kept_by_proposer"]["proposer-2"] == {"shown": d, "kept": d}
    assert bad["kept_by_proposer"]["proposer-2"] == {"shown": bad["judge_decisions"], "kept": 0}
    assert sum(v["kept"] for v in good["kept_by_model"].values()) == 2 * d
    # every layer's proposals are scored, one of three right in each, whatever the judge kept
    for s in (good, bad):
        (per_layer,) = s["correct_by_model"].values()
        assert per_layer["1"] == {"proposals": 12, "correct": 4}
        assert sum(v["proposals"] for v in per_layer.values()) == 3 * s["rounds_mean"] * 4
    # the default moderator of mixture_responder never stops: two rounds, one decision each
    assert good["rounds_mean"] == 2.0 and good["continued_correct"] == 4 and bad["continued_wrong"] == 4


def test_report_shows_the_judge_table(tmp_path, shared_data):
    _eval(tmp_path, shared_data, pick_right=True, limit=2)
    out = write_report(tmp_path, plots=False)
    md = (tmp_path / "report.md").read_text()
    assert "Judge and moderator" in md and "random-k recall" in md and "kept / shown, by model" in md
    sel = out["benchmarks"][0]["methods"]["smoa"]["selection"]
    assert sel["judge_recall"] == 1.0
