"""BFCL: the official mode agrees with the real bfcl-eval checker; the lenient mode is named.

The agreement test builds a bank of gold and perturbed replies from ../shared/data/bfcl and
compares smoa's verdicts with those of the installed bfcl-eval package (bfcl_reference.py).
"""

from __future__ import annotations

import pytest
from bfcl_reference import (
    agreement,
    build_bank,
    checker_only,
    load_items,
    official_verdicts,
    smoa_verdicts,
)

from smoa.eval.benchmarks import BFCL, bfcl_benchmark_name, get_benchmark
from smoa.eval.benchmarks.base import Item
from smoa.eval.benchmarks.bfcl_official import DecodeError, decode_calls


@pytest.fixture(scope="module")
def bank(shared_data):
    items = load_items(shared_data / "bfcl")
    replies = build_bank(items)
    try:
        official = official_verdicts(items, replies)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return items, replies, official


def test_official_mode_agrees_with_bfcl_eval(bank):
    items, replies, official = bank
    assert len(items) == 1240 and len(replies) > 20000
    res = agreement(items, replies, official, smoa_verdicts(items, replies, "official"))
    print(f"\nofficial mode vs bfcl-eval: {res['agree']}/{res['judged']} ({res['rate']:.4f}); "
          f"upstream accepts {res['upstream_accepts']}; disagreeing kinds {res['disagreeing_kinds']}")
    # the bank must discriminate: upstream both accepts and rejects a good share of it
    assert 0.15 < res["upstream_accepts"] / res["judged"] < 0.6
    assert res["upstream_crashes"] == 0
    assert res["rate"] >= 0.99, res


def test_same_decoded_calls_and_same_checker_verdicts(bank):
    items, replies, official = bank
    decoded = [e for e in replies if e["upstream_decoded"] is not None]
    assert len(decoded) > 10000
    for e in decoded:  # upstream's decoder and ours read every reply the same way
        assert decode_calls(e["reply"]) == e["upstream_decoded"], e["reply"]
    res = checker_only(items, replies, official, "official")
    assert res["rate"] >= 0.99, res


def test_lenient_mode_is_not_the_official_one(bank):
    items, replies, official = bank
    res = agreement(items, replies, official, smoa_verdicts(items, replies, "lenient"))
    print(f"\nlenient mode vs bfcl-eval: {res['agree']}/{res['judged']} ({res['rate']:.4f})")
    # the bank tells the two apart: the lenient reading accepts what upstream rejects
    assert res["rate"] < 0.9 and res["smoa_accepts_upstream_rejects"] > 1000


# ----------------------------------------------------------------------- rules, no package
DOC = [{"name": "math.power", "parameters": {"type": "dict", "properties": {
    "base": {"type": "integer"}, "exponent": {"type": "integer"},
    "mods": {"type": "array", "items": {"type": "integer"}},
    "unit": {"type": "string"}}, "required": ["base"]}}]
ANSWER = [{"math.power": {"base": [2], "exponent": [3], "mods": [[1, 2]], "unit": ["New York", ""]}}]


def _score(reply, mode="official", category="simple_python"):
    b = BFCL((category,), mode=mode)
    it = Item(id="x", prompt="", reference=ANSWER if category != "irrelevance" else [],
              meta={"category": category, "functions": DOC})
    return b.score(it, reply)


@pytest.mark.parametrize("reply", [
    "[math.power(base=2, exponent=3, mods=[1, 2])]",
    "math.power(base=2, exponent=3, mods=[1, 2])",
    "```\nmath.power(base=2, exponent=3, mods=[1, 2])\n```",
    "[math.power(base=2, exponent=3, mods=[1, 2], unit='new_york')]",  # strings standardized
    "[math.power(base=2, exponent=1 + 2, mods=[1, 2])]",  # arithmetic is computed
])
def test_official_accepts(reply):
    s = _score(reply)
    assert s.correct, s.detail
    assert s.detail["mode"] == "official"


@pytest.mark.parametrize("reply", [
    '{"name": "math.power", "arguments": {"base": 2, "exponent": 3, "mods": [1, 2]}}',  # JSON
    "```python\nmath.power(base=2, exponent=3, mods=[1, 2])\n```",  # fence with a language tag
    "Sure: math.power(base=2, exponent=3, mods=[1, 2])",  # prose
    "[math.power(2, 3, [1, 2])]",  # positional arguments
    "[math_power(base=2, exponent=3, mods=[1, 2])]",  # '_' for '.'
    "[math.power(base=2, exponent=3, mods=(1, 2))]",  # tuple for an array
    "[math.power(base=2, exponent=3, mods=[1.0, 2.0])]",  # floats in an integer array
    "[math.power(base=2, exponent=3, mods=[1, 2], unit='New\\tYork')]",  # a tab in a string
    "[math.power(base=2, exponent=3, mods=[1, 2], colour='red')]",  # a parameter the doc lacks
    "[math.power(base=2, exponent=3.0, mods=[1, 2])]",  # a float for an integer
    "[math.power(base=2, exponent=3)]",  # an expected parameter missing
])
def test_official_rejects_what_lenient_took(reply):
    assert not _score(reply).correct
    assert _score(reply, "lenient").detail["mode"] == "lenient"


def test_lenient_still_reads_loose_formats():
    for reply in ('{"name": "math.power", "arguments": {"base": 2, "exponent": 3, "mods": [1, 2]}}',
                  "Sure: math.power(base=2, exponent=3, mods=[1, 2])",
                  "[math_power(base=2, exponent=3, mods=[1, 2])]"):
        assert _score(reply, "lenient").correct, reply


def test_irrelevance_official():
    assert _score("", category="irrelevance").correct
    assert _score("No function fits.", category="irrelevance").correct
    assert _score("[]", category="irrelevance").correct
    assert _score("```python\n[math.power(base=1)]\n```", category="irrelevance").correct  # cannot decode
    assert not _score("[math.power(base=1)]", category="irrelevance").correct


def test_decoder_values():
    calls = decode_calls("[f(a=-1, b=x, c=g(), d=g(k=1), e=y[0], h=(1, 2), i={'k': [1]}, j=2 ** 3)]")
    assert calls == [{"f": {"a": -1, "b": "x", "c": "g()", "d": {"g": {"k": 1}}, "e": "y[0]",
                            "h": (1, 2), "i": {"k": [1]}, "j": 8}}]
    for bad in ("[f(a=lambda: 1)]", "[f(a=x.y)]", "[f(a=1 if b else 2)]", "[f(a=10 ** 100000)]",
                "[f(a=1 + b)]", "[1]", "f(", "[f(a={**b})]"):
        with pytest.raises(DecodeError):
            decode_calls(bad)


def test_mode_names():
    assert bfcl_benchmark_name("bfcl", "lenient") == "bfcl-lenient"
    assert bfcl_benchmark_name("BFCL_parallel", "lenient") == "bfcl-lenient-parallel"
    assert bfcl_benchmark_name("bfcl-lenient-parallel", "official") == "bfcl-parallel"
    assert bfcl_benchmark_name("gsm8k", "lenient") == "gsm8k"
    assert get_benchmark(bfcl_benchmark_name("bfcl-simple_python", "lenient")).mode == "lenient"
    assert get_benchmark("bfcl").mode == "official"


def test_cli_bfcl_mode_picks_the_benchmark(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from smoa.eval import cli_eval, runner

    seen = []

    def fake_run_eval(benchmark, methods, **kw):
        seen.append(benchmark)
        return {"benchmark": benchmark, "ran": 0, "skipped": 0, "errors": 0, "wall_s": 0.0,
                "store": str(tmp_path), "per_method": {}}

    monkeypatch.setattr(runner, "run_eval", fake_run_eval)
    for argv, want in ((["-b", "bfcl-parallel"], "bfcl-parallel"),
                       (["-b", "bfcl-parallel", "--bfcl-mode", "lenient"], "bfcl-lenient-parallel"),
                       (["-b", "gsm8k", "--bfcl-mode", "lenient"], "gsm8k")):
        res = CliRunner().invoke(cli_eval.eval_cmd, [*argv, "-m", "single", "-o", str(tmp_path)])
        assert res.exit_code == 0, res.output
        assert seen[-1] == want
    res = CliRunner().invoke(cli_eval.eval_cmd, ["-b", "bfcl", "--bfcl-mode", "loose", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output
