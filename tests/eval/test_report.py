"""`smoa report`: statistics, Pareto front, tables and plots from a results store."""

import pytest
from click.testing import CliRunner

from smoa.cli import main
from smoa.eval.report import (
    bootstrap_ci,
    build_report,
    pareto_front,
    render_markdown,
    summary_dict,
    write_report,
)
from smoa.eval.store import ResultsStore, Row


def stage(total, calls=1):
    return {"calls": calls, "prompt_tokens": total - 10, "completion_tokens": 10, "total_tokens": total, "latency_s": 0.1, "errors": 0, "cached": 0}


def fill(out, n=20):
    """single: 50% at 100 tok; moa: 80% at 1000 tok; smoa: 75% at 600 tok; mad: 60% at 1200 tok (dominated)."""
    spec = {
        "single": (0.5, {"propose": 100}),
        "moa": (0.8, {"propose": 900, "aggregate": 100}),
        "smoa": (0.75, {"propose": 400, "judge": 100, "moderate": 40, "aggregate": 60}),
        "mad": (0.6, {"propose": 1200}),
    }
    with ResultsStore(out) as st:
        for m, (acc, stages) in spec.items():
            for i in range(n):
                ok = i < round(acc * n)
                tot = sum(stages.values())
                st.put(Row(
                    "gsm8k", m, f"gsm8k/{i}", item_index=i, answer="x", score=1.0 if ok else 0.0, correct=ok,
                    tokens_by_stage={s: stage(v) for s, v in stages.items()}, total_tokens=tot,
                    prompt_tokens=tot - 10 * len(stages), completion_tokens=10 * len(stages),
                    calls=len(stages) * 2, wall_s=0.5 * len(stages),
                ))
        st.put(Row("gsm8k", "mad", "gsm8k/99", item_index=99, error="endpoint down"))


def test_bootstrap_is_seeded_and_sane():
    vals = [1.0] * 30 + [0.0] * 70
    a = bootstrap_ci(vals, seed=0)
    assert a == bootstrap_ci(vals, seed=0)
    assert a[0] < 0.3 < a[1] and a[1] - a[0] < 0.25
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert bootstrap_ci([]) is None


def test_pareto_front():
    pts = [(100, 0.5), (1000, 0.8), (600, 0.75), (1200, 0.6), (600, 0.7)]
    assert pareto_front(pts) == [0, 1, 2]
    # lower is better (bias scores): the cheapest lowest-bias points
    assert pareto_front([(1, 30.0), (2, 10.0), (3, 20.0)], lower_is_better=True) == [0, 1]


def test_report_numbers(tmp_path):
    fill(tmp_path)
    (rep,) = build_report(tmp_path)
    s = {m.method: m for m in rep.methods}
    assert [m.method for m in rep.methods] == ["single", "moa", "smoa", "mad"]
    assert s["moa"].quality == pytest.approx(0.8) and s["moa"].ratio_vs_moa == pytest.approx(1.0)
    assert s["smoa"].ratio_vs_moa == pytest.approx(0.6)
    assert s["smoa"].by_stage == {"propose": 400, "judge": 100, "moderate": 40, "aggregate": 60}
    assert s["mad"].errors == 1 and s["mad"].n == 20
    assert {m for m in s if s[m].pareto} == {"single", "moa", "smoa"}
    lo, hi = s["smoa"].ci
    assert lo < 0.75 < hi
    assert rep.metric == "accuracy"
    # paired against moa: smoa misses item 15 where moa is right (items 0-14 vs 0-15 right)
    assert s["smoa"].delta_vs_moa == pytest.approx(-0.05) and s["smoa"].paired_n == 20
    assert s["smoa"].delta_ci[0] <= -0.05 <= s["smoa"].delta_ci[1] <= 0.0
    assert s["moa"].delta_vs_moa is None


def test_tokens_vs_moa_is_over_the_items_both_finished_when_the_sets_differ(tmp_path):
    """A run still going: moa has items 0-3, smoa only 0-1. moa's items 2-3 are long ones;
    the ratio of the means over different items would be 0.25, over the shared ones it is 0.5."""
    with ResultsStore(tmp_path) as st:
        for i, tot in enumerate([1000, 1000, 5000, 5000]):
            st.put(Row("gsm8k", "moa", f"gsm8k/{i}", item_index=i, answer="x", score=1.0, correct=True,
                       tokens_by_stage={"propose": stage(tot)}, total_tokens=tot))
        for i in range(2):
            st.put(Row("gsm8k", "smoa", f"gsm8k/{i}", item_index=i, answer="x", score=1.0, correct=True,
                       tokens_by_stage={"propose": stage(500)}, total_tokens=500))
        st.put(Row("gsm8k", "single", "gsm8k/9", item_index=9, answer="x", score=1.0, correct=True,
                   tokens_by_stage={"propose": stage(100)}, total_tokens=100))
    (rep,) = build_report(tmp_path)
    s = {m.method: m for m in rep.methods}
    assert s["smoa"].ratio_vs_moa == pytest.approx(0.5) and s["smoa"].ratio_items == 2
    assert s["moa"].ratio_vs_moa == pytest.approx(1.0) and s["moa"].ratio_items == 0
    assert s["single"].ratio_vs_moa is None  # no item in common: no ratio rather than a wrong one
    md = render_markdown([rep])
    assert "| 500 | 0.50 (on 2) |" in md and "| 100 | - |" in md
    j = summary_dict(rep)["methods"]
    assert j["smoa"]["tokens_vs_moa"] == pytest.approx(0.5) and j["smoa"]["tokens_vs_moa_items"] == 2
    assert j["moa"]["tokens_vs_moa_items"] == 4


def test_report_files_and_cli(tmp_path):
    fill(tmp_path)
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "report.md").read_text()
    assert "## gsm8k" in md and "| smoa * | 20 | 0 | 0.750 |" in md
    assert "| moa * | 20 | 0 | 0.800 | [0.600, 0.950] | - |" in md
    assert "| mad | 20 | 1 | 0.600 |" in md
    assert "| smoa | 400 | 100 | 40 | 60 |" in md  # tokens per item by stage
    assert "0.60" in md  # smoa tokens vs moa
    html = (tmp_path / "report.html").read_text()
    assert "<table>" in html and "gsm8k_quality_vs_tokens.png" in html
    for png in ("gsm8k_quality_vs_tokens.png", "gsm8k_tokens_by_stage.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_report_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not a directory" in res.output
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "no results store" in res.output


def test_partial_runs_are_flagged(tmp_path):
    fill(tmp_path, n=4)
    with ResultsStore(tmp_path) as st:
        st.put(Row("gsm8k", "single", "gsm8k/50", item_index=50, score=1.0, correct=True))
    out = write_report(tmp_path, plots=False)
    assert out["files"] == [str(tmp_path / "report.md"), str(tmp_path / "report.html")]
    assert "different item sets" in (tmp_path / "report.md").read_text()


def test_lower_is_better_sets_flip_the_pareto_front(tmp_path):
    with ResultsStore(tmp_path) as st:
        for m, bias, tok in (("single", 40.0, 100), ("moa", 10.0, 1000), ("smoa", 20.0, 600), ("mad", 30.0, 1200)):
            for i in range(5):
                st.put(Row("ceb", m, f"ceb/{i}", item_index=i, score=bias, total_tokens=tok,
                           tokens_by_stage={"propose": stage(tok)}))
    (rep,) = build_report(tmp_path)
    assert rep.lower_is_better and rep.metric == "bias 0-99"
    assert {s.method for s in rep.methods if s.pareto} == {"single", "moa", "smoa"}
    write_report(tmp_path)
    assert "bias 0-99: lower is better" in (tmp_path / "report.md").read_text()
