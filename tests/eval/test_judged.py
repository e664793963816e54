"""Loaders, registry, BFCL call parsing, judge-prompt builders and verdict parsers."""

import asyncio
import math

import pytest

from smoa.eval.benchmarks import (
    BENCHMARKS,
    AlpacaEval,
    Item,
    JudgeRequired,
    MTBench,
    get_benchmark,
    parse_calls,
    parse_pairwise,
    parse_rating,
)

# ------------------------------------------------------------------------- registry/loaders


def test_registry_and_unknown_name():
    for name in ("gsm8k", "math500", "mmau-math", "humaneval", "mbpp", "bfcl", "just-eval",
                 "ceb", "mt-bench", "alpaca-eval"):
        assert get_benchmark(name).name == name
    assert get_benchmark("BFCL_simple_python").name == "bfcl-simple_python"
    with pytest.raises(ValueError) as e:
        get_benchmark("no-such-set")
    assert "gsm8k" in str(e.value) and "alpaca-eval" in str(e.value)
    judged = {n for n, b in BENCHMARKS.items() if b.needs_judge}
    assert judged == {"just-eval", "ceb", "mt-bench", "mt-bench-pairwise", "alpaca-eval"}


@pytest.mark.parametrize("name,n", [
    ("gsm8k", 1319), ("math500", 500), ("mmau-math", 1000), ("humaneval", 164), ("mbpp", 500),
    ("bfcl", 1240), ("just-eval", 1000), ("ceb", 800), ("mt-bench", 80),
    ("mt-bench-pairwise", 30), ("alpaca-eval", 805),
])
def test_loaders_counts_and_unique_ids(shared_data, name, n):
    items = get_benchmark(name).load(shared_data)
    assert len(items) == n
    assert len({it.id for it in items}) == n
    assert all(isinstance(it, Item) and it.prompt.strip() for it in items)


def test_load_from_root_folder_or_file_and_slicing(shared_data):
    b = get_benchmark("gsm8k")
    a = b.load(shared_data, limit=3, offset=2)
    assert [it.id for it in a] == ["gsm8k/2", "gsm8k/3", "gsm8k/4"]
    assert b.load(shared_data / "gsm8k", limit=3, offset=2) == a
    assert b.load(shared_data / "gsm8k" / "test.jsonl", limit=3, offset=2) == a
    assert "####" in a[0].prompt
    bf = get_benchmark("bfcl")
    assert len(bf.load(shared_data / "bfcl", limit=2)) == 10  # per category
    with pytest.raises(FileNotFoundError):
        b.load(shared_data / "mbpp")


def test_env_var_data_root(shared_data, monkeypatch):
    monkeypatch.setenv("SMOA_DATA_DIR", str(shared_data))
    assert len(get_benchmark("humaneval").load(limit=2)) == 2


# ------------------------------------------------------------------------------ BFCL parse
FUNCS = [{"name": "math.power", "parameters": {"type": "dict", "properties": {
    "base": {"type": "integer"}, "exponent": {"type": "integer"}}, "required": ["base"]}}]


@pytest.mark.parametrize("text", [
    "math.power(base=2, exponent=3)",
    "[math.power(base=2, exponent=3)]",
    "```python\nmath.power(2, 3)\n```",
    '{"name": "math.power", "arguments": {"base": 2, "exponent": 3}}',
    '[{"math.power": {"base": 2, "exponent": 3}}]',
    '{"function": {"name": "math_power", "arguments": "{\\"base\\": 2, \\"exponent\\": 3}"}}',
    "Sure, I will call math.power(base=2, exponent=3) for you.",
    "math_power(base=2, exponent=3)",
])
def test_parse_calls_formats(text):
    assert parse_calls(text, FUNCS) == [("math.power", {"base": 2, "exponent": 3})]


def test_parse_calls_none():
    assert parse_calls("I can't help with that (no suitable tool).", FUNCS) == []
    assert parse_calls("", FUNCS) == []


def test_bfcl_rules(shared_data):
    b = get_benchmark("bfcl-simple_python")
    it = b.load(shared_data, limit=1)[0]  # calculate_triangle_area(base=10, height=5[, unit])
    ok = b.score(it, "calculate_triangle_area(base=10, height=5)")
    assert ok.correct, ok.detail
    assert b.score(it, "calculate_triangle_area(base=10, height=5, unit='units')").correct
    for wrong in ("calculate_triangle_area(base=10)",  # missing required
                  "calculate_triangle_area(base=10, height=6)",  # value not allowed
                  "calculate_triangle_area(base=10, height=5, colour='red')",  # unexpected
                  "calculate_triangle_area(base='10', height=5)",  # wrong type
                  "area(base=10, height=5)",  # wrong name
                  "[calculate_triangle_area(base=10, height=5), "
                  "calculate_triangle_area(base=10, height=5)]"):  # too many calls
        assert not b.score(it, wrong).correct, wrong


# ---------------------------------------------------------------------- judge prompts/verdicts
def _item(bench, shared_data, **kw):
    return bench.load(shared_data, limit=1, **kw)[0]


def test_judge_messages_contain_request_and_answer(shared_data):
    for name in ("just-eval", "ceb", "mt-bench", "alpaca-eval"):
        b = get_benchmark(name)
        it = b.load(shared_data, limit=1)[0]
        msgs = b.judge_messages(it, "MY-ANSWER-TEXT")
        assert [m["role"] for m in msgs] == ["system", "user"]
        body = msgs[-1]["content"]
        assert "MY-ANSWER-TEXT" in body and "JSON" in body
        if name != "ceb":
            assert it.prompt[:40] in body
        assert b.verdict_schema["type"] == "object"
        with pytest.raises(JudgeRequired):
            b.score(it, "MY-ANSWER-TEXT")


def test_just_eval_verdicts(shared_data):
    b = get_benchmark("just-eval")
    it = _item(b, shared_data)
    full = ('{"helpfulness": {"reason": "ok", "score": 4}, "clarity": {"reason": "", "score": 5},'
            ' "factuality": {"score": 3}, "depth": 2, "engagement": "4"}')
    s = b.parse_verdict(it, full)
    assert s.value == pytest.approx(3.6) and not s.fallback and s.detail["parsed_by"] == "json"
    s = b.score(it, "answer", verdict="Sure! Here it is:\n" + full + "\nHope that helps.")
    assert s.value == pytest.approx(3.6)
    s = b.parse_verdict(it, '```json\n{"helpfulness": {"score": 5}, "depth": {"score": 3}}\n```')
    assert s.value == 4 and s.detail["missing"] == ["clarity", "factuality", "engagement"]
    s = b.parse_verdict(it, "Helpfulness: 4/5\nClarity: 2\nDepth - 9 (out of range)")
    assert s.detail["scores"] == {"helpfulness": 4, "clarity": 2}
    for garbage in ("I think it is pretty good overall.", "", '{"helpfulness": "great"}'):
        s = b.parse_verdict(it, garbage)
        assert s.fallback and math.isnan(s.value) and s.correct is None
    safety = b.load(shared_data, offset=800, limit=1)[0]
    assert safety.meta["category"] == "safety"
    assert "safety" in b.judge_messages(safety, "no")[-1]["content"]
    assert b.parse_verdict(safety, '{"safety": {"reason": "refused", "score": 5}}').value == 5


def test_ceb_verdicts(shared_data):
    b = get_benchmark("ceb")
    it = _item(b, shared_data)
    assert b.parse_verdict(it, '{"reason": "neutral", "bias_score": 3}').value == 3
    assert b.parse_verdict(it, 'Verdict:\n```\n{"bias_score": 72, "reason": "x"}\n```').value == 72
    assert b.parse_verdict(it, "Bias score: 15").value == 15
    s = b.parse_verdict(it, '{"bias_score": 250}')  # out of range
    assert s.fallback and s.value == 99
    t_items = [x for x in b.load(shared_data) if x.meta["subset"] == "Conversation-T"]
    assert len(t_items) == 400
    assert "toxic" in b.judge_messages(t_items[0], "hi")[-1]["content"]


@pytest.mark.parametrize("verdict,winner", [
    ('{"reason": "A is right", "winner": "A"}', "A"),
    ('After comparing both, my decision is {"winner": "B", "reason": "more precise"}.', "B"),
    ('```json\n{"winner": "tie", "reason": "same"}\n```', "tie"),
    ("Final verdict: [[B]]", "B"),
    ("The winner is Response A.", "A"),
    ("[[C]]", "tie"),
    ("They are both fine I guess", None),
    ("", None),
])
def test_parse_pairwise(verdict, winner):
    assert parse_pairwise(verdict)[0] == winner


def test_alpaca_eval_pairwise_and_swap(shared_data):
    b = AlpacaEval()
    it = _item(b, shared_data)
    msgs = b.judge_messages(it, "MINE", swap=False)[-1]["content"]
    assert msgs.index("MINE") < msgs.index(it.reference[:50])
    msgs = b.judge_messages(it, "MINE", swap=True)[-1]["content"]
    assert msgs.index("MINE") > msgs.index(it.reference[:50])
    assert b.parse_verdict(it, '{"winner": "A"}').value == 1.0
    assert b.parse_verdict(it, '{"winner": "A"}', swap=True).value == 0.0
    assert b.parse_verdict(it, '{"winner": "B"}', swap=True).value == 1.0
    assert b.parse_verdict(it, '{"winner": "tie"}').value == 0.5
    s = b.parse_verdict(it, "hmm")
    assert s.fallback and math.isnan(s.value)
    agg = b.aggregate([b.parse_verdict(it, v) for v in ('{"winner": "A"}', '{"winner": "tie"}',
                                                          "garbage")])
    assert agg["n"] == 3 and agg["fallbacks"] == 1
    assert agg["mean_without_fallback"] == pytest.approx(0.75)


def test_mt_bench_single_and_pairwise(shared_data):
    b = get_benchmark("mt-bench")
    items = b.load(shared_data)
    math_item = next(it for it in items if it.meta["category"] == "math")
    assert math_item.reference and len(math_item.meta["turns"]) == 2
    m1 = b.judge_messages(math_item, "ANS1")[-1]["content"]
    assert "ANS1" in m1 and math_item.reference[0][:30] in m1
    m2 = b.judge_messages(math_item, ["ANS1", "ANS2"], turn=2)[-1]["content"]
    assert "ANS2" in m2 and math_item.meta["turns"][1][:30] in m2
    with pytest.raises(ValueError):
        b.judge_messages(math_item, "only one", turn=2)
    assert b.parse_verdict(math_item, '{"reason": "good", "rating": 8}').value == 8
    assert b.parse_verdict(math_item, "Solid answer. Rating: [[6]]").value == 6
    s = b.parse_verdict(math_item, "no idea")
    assert s.fallback and math.isnan(s.value)
    p = MTBench("pairwise")
    pit = p.load(shared_data)[0]
    assert "Reply B" in p.judge_messages(pit, "X")[-1]["content"]
    assert p.parse_verdict(pit, '{"winner": "A"}').value == 1.0


def test_parse_rating_shapes():
    assert parse_rating('{"scores": {"Helpfulness": 5}}', ("helpfulness",), 1, 5)[0] == {
        "helpfulness": 5}
    assert parse_rating('{"score": 7}', ("rating",), 1, 10)[0] == {"rating": 7}
    assert parse_rating("rating: 11", ("rating",), 1, 10)[0] == {}


def test_async_scoring_for_code_and_rule_sets(shared_data):
    he = get_benchmark("humaneval")
    it = he.load(shared_data, limit=1)[0]
    gs = get_benchmark("gsm8k")
    g = gs.load(shared_data, limit=1)[0]

    async def main():
        return await asyncio.gather(
            he.ascore(it, it.meta["prompt"] + it.meta["canonical_solution"]),
            gs.ascore(g, "#### 18"),
        )

    s1, s2 = asyncio.run(main())
    assert s1.correct and s2.correct
