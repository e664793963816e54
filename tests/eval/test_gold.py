"""Acceptance: each rule-based scorer gives 100% on the set's own reference answers and
about 0% when every item is paired with another item's reference (a derangement)."""

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from smoa.eval.benchmarks import BFCL, get_benchmark
from smoa.eval.benchmarks.bfcl import calls_to_text

SHUFFLED_MAX = 0.05


def derangement(n: int, seed: int = 0) -> list[int]:
    """partner[i] != i for all i."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    partner = [0] * n
    for k, i in enumerate(order):
        partner[i] = order[(k + 1) % n]
    return partner


def rates(bench, items, answers, workers: int = 1) -> tuple[float, float, list]:
    partner = derangement(len(items))
    shuffled = [answers[partner[i]] for i in range(len(items))]
    with ThreadPoolExecutor(workers) as ex:
        gold = list(ex.map(bench.score, items, answers))
        bad = list(ex.map(bench.score, items, shuffled))
    misses = [(it.id, s.detail) for it, s in zip(items, gold, strict=True) if not s.correct]
    n = len(items)
    return sum(s.correct for s in gold) / n, sum(s.correct for s in bad) / n, misses


def _report(name, gold, shuffled, n):
    print(f"\n[gold] {name}: n={n} gold={gold:.3f} shuffled={shuffled:.3f}")


def test_gsm8k_gold(shared_data):
    b = get_benchmark("gsm8k")
    items = b.load(shared_data, limit=200)
    assert len(items) == 200
    gold, shuffled, misses = rates(b, items, [it.meta["solution"] for it in items])
    _report("gsm8k", gold, shuffled, len(items))
    assert gold == 1.0, misses[:5]
    assert shuffled < SHUFFLED_MAX


def test_math500_gold(shared_data):
    b = get_benchmark("math500")
    items = b.load(shared_data)
    assert len(items) == 500
    answers = [f"Therefore the answer is $\\boxed{{{it.reference}}}$." for it in items]
    gold, shuffled, misses = rates(b, items, answers)
    _report("math500", gold, shuffled, len(items))
    assert gold == 1.0, misses[:5]
    assert shuffled < SHUFFLED_MAX


def test_mmau_math_gold(shared_data):
    b = get_benchmark("mmau-math")
    items = b.load(shared_data)
    assert len(items) == 1000
    answers = [f"#THOUGHTS#: quick.\n#ANSWER#: {it.reference}" for it in items]
    gold, shuffled, misses = rates(b, items, answers)
    _report("mmau-math", gold, shuffled, len(items))
    assert gold == 1.0, misses[:5]
    assert shuffled < SHUFFLED_MAX


def test_humaneval_gold(shared_data):
    b = get_benchmark("humaneval")
    items = b.load(shared_data)
    assert len(items) == 164
    answers = [
        "Here is the function:\n```python\n" + it.meta["prompt"] + it.meta["canonical_solution"]
        + "```\n" for it in items
    ]
    gold, shuffled, misses = rates(b, items, answers, workers=2)
    _report("humaneval", gold, shuffled, len(items))
    assert gold == 1.0, [(i, d["status"], d["stderr_tail"][-300:]) for i, d in misses[:3]]
    assert shuffled < SHUFFLED_MAX


def test_humaneval_body_only_completion(shared_data):
    b = get_benchmark("humaneval")
    item = b.load(shared_data, limit=1)[0]
    assert b.score(item, item.meta["canonical_solution"]).correct  # continues the prompt
    assert not b.score(item, "    return None\n").correct


def test_mbpp_gold(shared_data):
    b = get_benchmark("mbpp")
    items = b.load(shared_data, limit=100)
    assert len(items) == 100 and items[0].id == "mbpp/11"
    answers = [f"```python\n{it.meta['code']}\n```" for it in items]
    gold, shuffled, misses = rates(b, items, answers, workers=2)
    _report("mbpp", gold, shuffled, len(items))
    assert gold == 1.0, [(i, d["status"], d["stderr_tail"][-300:]) for i, d in misses[:3]]
    assert shuffled < SHUFFLED_MAX


@pytest.mark.parametrize("category", ["simple_python", "multiple", "parallel",
                                      "parallel_multiple"])
def test_bfcl_gold(shared_data, category):
    b = BFCL((category,))
    items = b.load(shared_data)
    assert len(items) in (200, 400)
    answers = [calls_to_text(it.reference, it.meta["functions"]) for it in items]
    gold, shuffled, misses = rates(b, items, answers)
    _report(f"bfcl-{category}", gold, shuffled, len(items))
    assert gold == 1.0, misses[:5]
    assert shuffled < SHUFFLED_MAX


def test_bfcl_irrelevance(shared_data):
    b = get_benchmark("bfcl-irrelevance")
    items = b.load(shared_data)
    assert len(items) == 240
    empty = [b.score(it, "").correct for it in items]
    prose = [b.score(it, "None of the given functions can answer this.").correct
             for it in items]
    # a call to one of the offered functions is wrong
    called = [b.score(it, f"[{it.meta['functions'][0]['name']}()]").correct for it in items]
    _report("bfcl-irrelevance", sum(empty) / 240, sum(called) / 240, 240)
    assert all(empty) and all(prose)
    assert not any(called)
