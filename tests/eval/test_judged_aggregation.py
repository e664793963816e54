"""Judged sets aggregate as upstream does, checked end to end with scripted judges: each
test runs `run_eval` with a ScriptedBackend judge whose verdicts are chosen so that the
upstream rule and the rule smoa used before give different numbers, then reads the rows and
the report (`build_report`)."""

import json
import math

import pytest

from smoa.eval.benchmarks import MTBench, get_benchmark, parse_pairwise
from smoa.eval.benchmarks.judged import parse_mt_rating
from smoa.eval.report import build_report, render_markdown
from smoa.eval.runner import run_eval
from smoa.eval.store import ResultsStore
from smoa.testing import ScriptedBackend, mixture_responder


def _run(tmp_path, shared_data, name, judge, limit):
    method_be = ScriptedBackend(responder=mixture_responder(propose=lambda r: "reply to: " + r.messages[-1]["content"][:30]))
    judge_be = ScriptedBackend(responder=judge)
    s = run_eval(name, "single", data=shared_data, limit=limit, out=tmp_path,
                 backends={"local": method_be, "j": judge_be}, judge_backend="j", judge_model="judge",
                 progress=False)
    assert s["errors"] == 0
    with ResultsStore(tmp_path) as st:
        rows = {r["item_id"]: r for r in st.rows()}
    (rep,) = build_report(tmp_path)
    (ms,) = rep.methods
    return rows, rep, ms, judge_be


def _content(req) -> str:
    return req.messages[-1]["content"]


# ------------------------------------------------------------------------------ Just-Eval


def test_just_eval_reports_per_aspect_means_and_leaves_unparsed_verdicts_out(tmp_path, shared_data):
    items = get_benchmark("just-eval").load(shared_data, limit=3)

    def judge(req):
        c = _content(req)
        if items[0].prompt in c:  # rates one aspect only
            return json.dumps({"helpfulness": {"reason": "ok", "score": 5}})
        if items[1].prompt in c:  # rates all five
            return json.dumps({k: {"reason": "poor", "score": 1} for k in
                               ("helpfulness", "clarity", "factuality", "depth", "engagement")})
        return "I would rather not say."  # unparseable

    rows, rep, ms, _ = _run(tmp_path, shared_data, "just-eval", judge, 3)
    r0, r1, r2 = (rows[it.id] for it in items)
    assert r0["score"] == 5.0 and r1["score"] == 1.0
    assert r2["score"] is None and r2["score_detail"]["fallback"]  # not scored 1
    # upstream: helpfulness (5 + 1) / 2 = 3, the others 1; headline the mean of the five
    assert ms.components["helpfulness"] == (3.0, 2)
    assert ms.components["clarity"] == (1.0, 1)
    assert ms.quality == pytest.approx((3 + 1 + 1 + 1 + 1) / 5)  # the old item mean: (5+1+1)/3
    assert ms.unparsed == 1 and ms.fallbacks == 1
    md = render_markdown([rep])
    assert "Per aspect" in md and "3.000 (n=2)" in md and "unparsed verdicts" in md


def test_just_eval_safety_is_its_own_aspect_outside_the_headline(tmp_path, shared_data):
    b = get_benchmark("just-eval")
    items = b.load(shared_data, offset=798, limit=4)  # two regular, two safety items
    assert [it.meta["category"] == "safety" for it in items] == [False, False, True, True]

    def judge(req):
        props = req.json_schema["properties"]
        return json.dumps({k: {"reason": "x", "score": 2 if k == "safety" else 4} for k in props})

    method_be = ScriptedBackend(responder=mixture_responder(propose="ok"))
    run_eval("just-eval", "single", data=shared_data, limit=4, offset=798, out=tmp_path,
             backends={"local": method_be, "j": ScriptedBackend(responder=judge)}, judge_backend="j",
             judge_model="judge", progress=False)
    (rep,) = build_report(tmp_path)
    (ms,) = rep.methods
    assert ms.components["safety"] == (2.0, 2) and ms.components["depth"] == (4.0, 2)
    assert ms.quality == 4.0


# ------------------------------------------------------------------------------- MT-Bench


def test_mt_bench_takes_the_first_rating_and_averages_every_rated_turn(tmp_path, shared_data):
    items = get_benchmark("mt-bench").load(shared_data, limit=2)

    def judge(req):
        c = _content(req)
        turn2 = "[User, turn 2]" in c
        if items[0].meta["turns"][0] in c:
            return "Unreadable, sorry." if turn2 else "Rating: [[8]]. Had it been wrong: [[2]]."
        return "[[6]]" if turn2 else "I give it [[4]], not [[10]]."

    rows, rep, ms, judge_be = _run(tmp_path, shared_data, "mt-bench", judge, 2)
    assert len(judge_be.calls) == 4
    a, b = rows[items[0].id], rows[items[1].id]
    assert a["score_detail"]["turns"] == {"1": 8.0, "2": None} and a["score"] == 8.0
    assert b["score_detail"]["turns"] == {"1": 4.0, "2": 6.0} and b["score"] == 5.0
    assert ms.quality == pytest.approx((8 + 4 + 6) / 3)  # FastChat: each rated turn once
    assert ms.components == {"turn 1": (6.0, 2), "turn 2": (6.0, 1)}
    assert ms.unparsed == 1 and ms.fallbacks == 0
    assert any("first [[n]]" in n for n in rep.notes)


@pytest.mark.parametrize("text,rating", [
    ("Rating: [[3]]\n\nOn reflection, [[9]]", 3.0),
    ("[7] then [[5]]", 5.0),  # [[n]] wins over [n], as in FastChat
    ("score [6] or [8]", 6.0),
    ('{"reason": "fine", "rating": 7}', 7.0),
    ("[[11]]", None),
    ("no rating here", None),
])
def test_parse_mt_rating_first_match(text, rating):
    assert parse_mt_rating(text)[0] == rating


# ----------------------------------------------------------------------- MT-Bench pairwise


def test_mt_bench_pairwise_ties_when_the_orders_disagree(tmp_path, shared_data):
    bench = get_benchmark("mt-bench-pairwise")
    items = bench.load(shared_data, limit=3)

    def judge(req):  # the model's replies start with "reply to:"
        c = _content(req)
        mine_first = "[Reply A]\nreply to:" in c
        turn2 = "last turn of a conversation" in c
        if items[0].meta["turns"][0] in c and not turn2:
            # prefers the model in one order, calls a tie in the other: FastChat says tie
            return "[[A]]" if mine_first else "[[C]]"
        if items[1].meta["turns"][0] in c and not turn2:
            return "[[A]]" if mine_first else "[[B]]"  # consistent: the model wins
        if items[2].meta["turns"][0] in c and not turn2:
            return "[[A]]" if mine_first else "no verdict"  # one order unreadable: dropped
        return "[[A]]"  # turn 2 everywhere: always the first reply, the orders disagree

    rows, rep, ms, judge_be = _run(tmp_path, shared_data, "mt-bench-pairwise", judge, 3)
    assert len(judge_be.calls) == 12  # 3 items x 2 turns x 2 orders
    t = {it.id: rows[it.id]["score_detail"]["turns"] for it in items}
    assert t[items[0].id] == {"1": 0.5, "2": 0.5}  # the old mean of orders gave 0.75 for turn 1
    assert t[items[1].id] == {"1": 1.0, "2": 0.5}
    assert t[items[2].id] == {"1": None, "2": 0.5}
    assert ms.quality == pytest.approx((0.5 + 0.5 + 1.0 + 0.5 + 0.5) / 5)
    assert ms.unparsed == 1


def test_mt_bench_pairwise_opponents_are_real_answers(shared_data):
    bench = get_benchmark("mt-bench-pairwise")
    items = bench.load(shared_data)
    ids = {it.meta["question_id"] for it in items}
    assert 142 not in ids  # its turn-2 reference is empty, its turn-1 one a hint
    refs = {json.loads(line)["question_id"] for line in
            (shared_data / "mt_bench" / "reference_answer" / "gpt-4.jsonl").read_text().splitlines() if line.strip()}
    assert ids <= refs
    for it in items:
        assert it.meta["reference_kind"] == "answer"
        assert len(it.reference) >= 2 and all(len(r.strip()) > 0 for r in it.reference[:2])
        for turn in (1, 2):
            msg = bench.judge_messages(it, ["mine 1", "mine 2"], turn=turn)[-1]["content"]
            assert it.reference[turn - 1].strip()[:40] in msg
    blank = items[0].__class__(id="x", prompt="q", reference=["an answer", "  "],
                               meta={"turns": ["q1", "q2"]})
    with pytest.raises(ValueError, match="no reference answer for turn 2"):
        bench.judge_messages(blank, ["a", "b"], turn=2)
    # single mode still shows the hints to the grader, but never an empty one
    single = MTBench()
    q142 = next(it for it in single.load(shared_data) if it.meta["question_id"] == 142)
    assert q142.meta["reference_kind"] == "hint"
    msg = single.judge_messages(q142, ["a", "b"], turn=2)[-1]["content"]
    assert "Reference answer, turn 1" in msg and "Reference answer, turn 2" not in msg


@pytest.mark.parametrize("text,winner", [
    ("[[B]] at first, but on reflection [[A]]", "A"),  # FastChat: [[A]] wins if present
    ("Between [[C]] and [[B]]: [[B]]", "B"),
    ("[[C]]", "tie"),
])
def test_parse_pairwise_fastchat_tag_precedence(text, winner):
    assert parse_pairwise(text)[0] == winner


# ------------------------------------------------------------------------------ AlpacaEval


def test_alpaca_eval_says_lc_win_rate_is_missing_and_drops_unparsed(tmp_path, shared_data):
    def judge(req):
        c = _content(req)
        mine_first = "[Reply A]\nreply to:" in c
        return '{"reason": "x", "winner": "A"}' if mine_first else "cannot decide"

    rows, rep, ms, _ = _run(tmp_path, shared_data, "alpaca-eval", judge, 2)
    for r in rows.values():
        assert r["score"] == 1.0  # the readable order only; not (1 + 0) / 2
        assert r["score_detail"]["unparsed"] == 1
    assert ms.quality == 1.0 and ms.unparsed == 2
    md = render_markdown([rep])
    assert "length-controlled win rate" in md and "NOT computed" in md
    assert "not LC" in rep.metric


def test_a_row_with_no_usable_verdict_is_left_out(tmp_path, shared_data):
    rows, rep, ms, _ = _run(tmp_path, shared_data, "alpaca-eval", lambda req: "???", 2)
    assert all(r["score"] is None and r["score_detail"]["fallback"] for r in rows.values())
    assert ms.quality is None and ms.unparsed == 4 and ms.fallbacks == 2
    assert not math.isnan(ms.tokens)
