"""`smoa report DIR`: tables and plots from an evaluation directory's results store.

Per benchmark and method: quality with a seeded bootstrap 95% interval, tokens per item by
stage, calls and wall time per item, and the token cost of each method relative to moa.
Plots (PNG, matplotlib's Agg backend): quality vs tokens per item with the Pareto front
marked, and tokens per item stacked by stage. Writes DIR/report.md and DIR/report.html.

Judged sets say how their headline is formed (``Benchmark.headline``): the mean of the item
scores, the mean over every rated turn (MT-Bench, as FastChat), or the mean of the
per-aspect means (Just-Eval). Their per-aspect/per-turn means, the count of unparsed judge
verdicts (left out of every mean) and the set's own notes (what is not computed) are
printed with the tables.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..policy import METHODS, sparse_methods
from ..types import SmoaError
from .budget import cutoff_summary, warning
from .selection import selection_summary
from .store import STORE_NAME, ResultsStore

STAGE_ORDER = ("role", "propose", "judge", "moderate", "aggregate")
# display order: the baselines, then smoa and its variants (the policy table's order), then the rest
METHOD_ORDER = ("single", "moa", *sparse_methods(), *(m for m in METHODS if m not in ("single", "moa") and m not in sparse_methods()))
STAGE_COLORS = {
    "role": "#8c8c8c", "propose": "#4c72b0", "judge": "#dd8452", "moderate": "#c44e52",
    "aggregate": "#55a868",
}
BOOTSTRAP_SAMPLES = 2000


@dataclass
class MethodStats:
    method: str
    n: int  # rows without error
    errors: int
    quality: float | None
    ci: tuple[float, float] | None
    accuracy: bool  # scores are 0/1
    tokens: float  # per item, all stages
    prompt_tokens: float
    completion_tokens: float
    by_stage: dict[str, float] = field(default_factory=dict)  # tokens per item per stage
    calls: float = 0.0
    wall_s: float = 0.0
    latency_s: float = 0.0
    judge_tokens: float = 0.0  # the evaluation judge's (not the method's)
    fallbacks: int = 0  # unusable evaluation-judge verdicts
    ratio_vs_moa: float | None = None
    ratio_items: int = 0  # when item sets differ: the ratio is over the items both finished
    delta_vs_moa: float | None = None  # paired: mean over items both scored of (this - moa)
    delta_ci: tuple[float, float] | None = None
    paired_n: int = 0
    pareto: bool = False
    # stage -> the models that answered its calls (from the traces: what really ran)
    models: dict[str, list[str]] = field(default_factory=dict)
    scores_by_item: dict[str, float] = field(default_factory=dict, repr=False)
    tokens_by_item: dict[str, float] = field(default_factory=dict, repr=False)
    selection: dict[str, Any] | None = None  # judge and moderator figures (selection.py)
    cutoffs: dict[str, Any] | None = None  # calls stopped by max_tokens (budget.py)
    # judged sets: the mean and count of each component (aspect, turn) and the number of
    # judge verdicts that could not be read (left out of every mean)
    components: dict[str, tuple[float, int]] = field(default_factory=dict)
    unparsed: int = 0


@dataclass
class BenchReport:
    benchmark: str
    methods: list[MethodStats]
    lower_is_better: bool = False
    metric: str = "accuracy"
    setup: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    notes: list[str] = field(default_factory=list)  # the benchmark's own (what is not there)
    warnings: list[str] = field(default_factory=list)  # what makes a method's score suspect (budget.py)
    plots: dict[str, str] = field(default_factory=dict)


def bootstrap_ci(values: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (numpy, seeded: the same data gives the same interval)."""
    import numpy as np

    if not values:
        return None
    x = np.asarray(values, dtype=float)
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(samples, len(x)))
    means = x[idx].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return (float(lo), float(hi))


def component_matrix(details: list[dict], bench: Any) -> tuple[list[str], Any]:
    """(component names, rows x components array with NaN where a row lacks one)."""
    import numpy as np

    get = getattr(bench, "components", None)
    comps = [get(d or {}) if callable(get) else {} for d in details]
    names = sorted({k for c in comps for k in c})
    m = np.full((len(comps), len(names)), np.nan)
    for i, c in enumerate(comps):
        for j, k in enumerate(names):
            if k in c:
                m[i, j] = c[k]
    return names, m


def headline_stat(names: list[str], m: Any, rule: str, headline_components: tuple[str, ...] = ()) -> Any:
    """The headline of a rows x components array (or a stack of them, samples x rows x comps):
    "cells" = mean of every value; "component_means" = mean of the per-component means
    (over ``headline_components`` where any are present)."""
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        if rule == "cells":
            return np.nansum(m, axis=-1).sum(axis=-1) / (~np.isnan(m)).sum(axis=(-1, -2))
        cols = [j for j, k in enumerate(names) if k in headline_components] or list(range(len(names)))
        sub = m[..., cols]
        means = np.nansum(sub, axis=-2) / (~np.isnan(sub)).sum(axis=-2)
        return np.nanmean(means, axis=-1)


def bootstrap_headline_ci(names: list[str], m: Any, rule: str, headline_components: tuple[str, ...] = (),
                          samples: int = BOOTSTRAP_SAMPLES, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of :func:`headline_stat`, resampling rows (seeded)."""
    import warnings

    import numpy as np

    if m.shape[0] == 0 or not (~np.isnan(m)).any():
        return None
    rng = np.random.default_rng(seed)
    stats = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for start in range(0, samples, 200):
            idx = rng.integers(0, m.shape[0], size=(min(200, samples - start), m.shape[0]))
            stats.append(headline_stat(names, m[idx], rule, headline_components))
    x = np.concatenate(stats)
    x = x[~np.isnan(x)]
    if not len(x):
        return None
    a = (1 - level) / 2
    lo, hi = np.quantile(x, [a, 1 - a])
    return (float(lo), float(hi))


def pareto_front(points: list[tuple[float, float]], lower_is_better: bool = False) -> list[int]:
    """Indices of points no other point beats on both cost (x, lower better) and quality (y)."""
    out = []
    for i, (xi, yi) in enumerate(points):
        qi = -yi if lower_is_better else yi
        dominated = False
        for j, (xj, yj) in enumerate(points):
            if j == i:
                continue
            qj = -yj if lower_is_better else yj
            if xj <= xi and qj >= qi and (xj < xi or qj > qi):
                dominated = True
                break
        if not dominated:
            out.append(i)
    return out


def _order(methods: list[str]) -> list[str]:
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_ORDER)


# What the mean score is, for sets whose benchmark class does not say (attributes
# `metric` and `lower_is_better` on the benchmark win).
_METRICS = {
    "just-eval": ("mean of aspect means 1-5", False),
    "ceb": ("bias 0-99", True),
    "mt-bench": ("mean turn rating 1-10", False),
    "mt-bench-pairwise": ("win rate vs GPT-4 reference (ties half)", False),
    "alpaca-eval": ("raw win rate vs baseline (not LC)", False),
}


def _bench(name: str) -> Any:
    try:
        from .runner import get_benchmark

        return get_benchmark(name)
    except Exception:
        return None


def _bench_meta(name: str) -> tuple[bool, str]:
    metric, lower = _METRICS.get(name, ("", False))
    b = _bench(name)
    if b is None:
        return lower, metric
    return bool(getattr(b, "lower_is_better", lower)), str(getattr(b, "metric", "") or metric)


def method_stats(rows: list[dict[str, Any]], method: str, seed: int = 0, bench: Any = None) -> MethodStats:
    ok = [r for r in rows if r["error"] is None]
    errors = len(rows) - len(ok)
    scores = [float(r["score"]) for r in ok if r["score"] is not None and not math.isnan(float(r["score"]))]
    n = len(ok)

    def mean(key: str) -> float:
        return sum(float(r[key] or 0) for r in ok) / n if n else 0.0

    by_stage: dict[str, float] = {}
    for r in ok:
        for st, s in (r["tokens_by_stage"] or {}).items():
            by_stage[st] = by_stage.get(st, 0.0) + float(s.get("total_tokens", 0))
    by_stage = {st: v / n for st, v in by_stage.items()} if n else {}
    st = MethodStats(
        method=method, n=n, errors=errors,
        scores_by_item={r["item_id"]: float(r["score"]) for r in ok if r["score"] is not None and not math.isnan(float(r["score"]))},
        tokens_by_item={r["item_id"]: float(r["total_tokens"] or 0) for r in ok},
        quality=sum(scores) / len(scores) if scores else None,
        ci=bootstrap_ci(scores, seed=seed),
        accuracy=bool(scores) and all(s in (0.0, 1.0) for s in scores),
        tokens=mean("total_tokens"), prompt_tokens=mean("prompt_tokens"), completion_tokens=mean("completion_tokens"),
        by_stage=by_stage, calls=mean("calls"), wall_s=mean("wall_s"), latency_s=mean("latency_s"),
        judge_tokens=mean("judge_tokens"),
        fallbacks=sum(1 for r in ok if (r.get("score_detail") or {}).get("fallback")),
        selection=selection_summary(ok) if any("trace" in r for r in ok) else None,
        cutoffs=cutoff_summary(ok) if any("trace" in r for r in ok) else None,
    )
    details = [r.get("score_detail") or {} for r in ok]
    st.unparsed = sum(int(d.get("unparsed", 1 if d.get("fallback") else 0)) for d in details)
    rule = getattr(bench, "headline", "items")
    names, m = component_matrix(details, bench)
    if names:
        import numpy as np

        for j, k in enumerate(names):
            col = m[:, j][~np.isnan(m[:, j])]
            st.components[k] = (float(col.mean()) if len(col) else float("nan"), int(len(col)))
        if rule in ("cells", "component_means"):
            hc = tuple(getattr(bench, "headline_components", ()))
            q = float(headline_stat(names, m, rule, hc))
            st.quality = None if math.isnan(q) else q
            st.ci = bootstrap_headline_ci(names, m, rule, hc, seed=seed)
    return st


def models_by_stage(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """stage -> the models whose calls answered in that stage, over the rows' traces."""
    seen: dict[str, dict[str, None]] = {}
    for r in rows:
        for c in (r.get("trace") or {}).get("calls", []):
            if c.get("model") and not c.get("error"):
                seen.setdefault(c.get("stage", "?"), {})[str(c["model"])] = None
    return {st: sorted(ms) for st, ms in seen.items()}


def build_report(out: str | Path, seed: int = 0) -> list[BenchReport]:
    path = Path(out)
    db = path / STORE_NAME if path.is_dir() else path
    if not db.is_file():
        raise SmoaError(f"no results store at {db}: run `smoa eval ... --out {path}` first")
    reports: list[BenchReport] = []
    with ResultsStore(db) as store:
        for b in store.benchmarks():
            lower, metric = _bench_meta(b)
            bench = _bench(b)
            stats = []
            ids: dict[str, set[str]] = {}
            for m in _order(store.methods(b)):
                rows = list(store.rows(b, m, with_trace=True))
                ids[m] = {r["item_id"] for r in rows if r["error"] is None}
                st = method_stats(rows, m, seed=seed, bench=bench)
                st.models = models_by_stage(rows)
                stats.append(st)
            rep = BenchReport(benchmark=b, methods=stats, lower_is_better=lower,
                              notes=list(getattr(bench, "report_notes", ()) or ()))
            rep.warnings = [w for w in [warning([(s.method, s.cutoffs) for s in stats])] if w]
            rep.metric = metric or ("accuracy" if all(s.accuracy for s in stats if s.quality is not None) else "mean score")
            for m in ids:
                setup = store.get_setup(b, m, "roles")
                if setup:
                    rep.setup[m] = setup
            if len({frozenset(v) for v in ids.values()}) > 1:
                sizes = ", ".join(f"{m} {len(v)}" for m, v in ids.items())
                rep.note = f"Methods were scored on different item sets ({sizes}): compare with care, or finish the run."
            moa = next((s for s in stats if s.method == "moa" and s.n), None)
            for s in stats:
                if moa and moa.tokens:
                    s.ratio_vs_moa, s.ratio_items = token_ratio(s, moa)
                if moa and s is not moa:
                    common = sorted(set(s.scores_by_item) & set(moa.scores_by_item))
                    diffs = [s.scores_by_item[i] - moa.scores_by_item[i] for i in common]
                    if diffs:
                        s.paired_n = len(diffs)
                        s.delta_vs_moa = sum(diffs) / len(diffs)
                        s.delta_ci = bootstrap_ci(diffs, seed=seed)
            scored = [s for s in stats if s.quality is not None and s.n]
            front = pareto_front([(s.tokens, s.quality or 0.0) for s in scored], lower)
            for i in front:
                scored[i].pareto = True
            reports.append(rep)
    return reports


# ---------------------------------------------------------------------------
# plots


def plot_quality_vs_tokens(rep: BenchReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [s for s in rep.methods if s.quality is not None and s.n]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for s in pts:
        lo, hi = s.ci or (s.quality, s.quality)
        ax.errorbar(
            s.tokens, s.quality, yerr=[[s.quality - lo], [hi - s.quality]], fmt="o", capsize=4,
            markersize=8, color="#c44e52" if s.pareto else "#4c72b0", ecolor="#999999",
            markeredgecolor="black" if s.pareto else "none",
        )
        ax.annotate(s.method, (s.tokens, s.quality), textcoords="offset points", xytext=(8, 6), fontsize=10)
    front = sorted((s for s in pts if s.pareto), key=lambda s: s.tokens)
    if len(front) > 1:
        ax.plot([s.tokens for s in front], [s.quality for s in front], "--", color="#c44e52", lw=1.2)
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Line2D([], [], marker="o", ls="--", color="#c44e52", markeredgecolor="black", label="Pareto front"),
            Line2D([], [], marker="o", ls="", color="#4c72b0", label="dominated"),
        ],
        loc="best", fontsize=9,
    )
    if pts:
        xs = [s.tokens for s in pts]
        if max(xs) / max(min(xs), 1) > 20:
            ax.set_xscale("log")
        else:
            ax.set_xlim(0, max(xs) * 1.2)
    better = "lower is better" if rep.lower_is_better else "higher is better"
    ax.set_xlabel("tokens per item (prompt + completion, all stages)")
    ax.set_ylabel(f"{rep.metric} ({better}; bars: bootstrap 95% CI)")
    n = max((s.n for s in pts), default=0)
    ax.set_title(f"{rep.benchmark}: quality vs cost (n = {n} items)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_tokens_by_stage(rep: BenchReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [s for s in rep.methods if s.n]
    stages = [st for st in STAGE_ORDER if any(s.by_stage.get(st) for s in ms)]
    stages += sorted({st for s in ms for st in s.by_stage} - set(stages) - set(STAGE_ORDER))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    bottom = [0.0] * len(ms)
    xs = list(range(len(ms)))
    for st in stages:
        vals = [s.by_stage.get(st, 0.0) for s in ms]
        ax.bar(xs, vals, bottom=bottom, label=st, color=STAGE_COLORS.get(st), width=0.6)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for x, total in zip(xs, bottom, strict=True):
        ax.annotate(f"{total:,.0f}", (x, total), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=9)
    ax.set_xticks(xs, [s.method for s in ms])
    ax.set_ylabel("tokens per item")
    ax.set_title(f"{rep.benchmark}: tokens per item by stage")
    ax.set_ylim(0, max(bottom, default=1) * 1.15 or 1)
    ax.legend(fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------
# tables


def _f(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _tok(v: float) -> str:
    return f"{v:,.0f}"


def tables(rep: BenchReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for each table of one benchmark."""
    q = []
    for s in rep.methods:
        ci = "-" if s.ci is None else f"[{s.ci[0]:.3f}, {s.ci[1]:.3f}]"
        if s.delta_vs_moa is None:
            delta = "-"
        else:
            lo, hi = s.delta_ci or (s.delta_vs_moa, s.delta_vs_moa)
            delta = f"{s.delta_vs_moa:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        q.append([
            s.method + (" *" if s.pareto else ""), str(s.n), str(s.errors), _f(s.quality), ci, delta,
            _tok(s.tokens), _ratio(s),
            _f(s.calls, 1), _f(s.wall_s, 2),
        ])
    stages = [st for st in STAGE_ORDER if any(s.by_stage.get(st) for s in rep.methods)]
    stages += sorted({st for s in rep.methods for st in s.by_stage} - set(stages) - set(STAGE_ORDER))
    t = []
    for s in rep.methods:
        t.append([s.method] + [_tok(s.by_stage.get(st, 0.0)) for st in stages]
                 + [_tok(s.prompt_tokens), _tok(s.completion_tokens), _tok(s.tokens)])
    out = [
        (
            "Quality and cost",
            ["method", "n", "errors", rep.metric, "95% CI", "vs moa (paired, 95% CI)", "tokens/item", "tokens vs moa", "calls/item", "wall s/item"],
            q,
        ),
        ("Tokens per item by stage", ["method", *stages, "prompt", "completion", "total"], t),
    ]
    sel = [(s.method, s.selection) for s in rep.methods if s.selection]
    if sel:
        out.append((
            "Judge and moderator (every proposal scored)",
            ["method", "items", "oracle acc.", "correct proposals, by model (layer 1; all layers)", "judge decisions", "judge recall", "random-k recall",
             "kept positions", "kept / shown, by model", "stopped: correct kept / none", "went on: correct kept / none", "rounds/item"],
            [[m, str(x["items"]), _f(x["oracle_accuracy"]), _by_model(x.get("correct_by_model", {})),
              f"{x['judge_decisions']} ({x['judge_chances']} with a correct candidate)",
              _f(x["judge_recall"]), _f(x["random_recall"]),
              " ".join(f"{p}:{c}" for p, c in x["kept_positions"].items()) or "-",
              ", ".join(f"{mod} {v['kept']}/{v['shown']}" for mod, v in x.get("kept_by_model", {}).items()) or "-",
              f"{x['stopped_correct']} / {x['stopped_wrong']}", f"{x['continued_correct']} / {x['continued_wrong']}",
              _f(x["rounds_mean"], 2)] for m, x in sel],
        ))
    cut = [(s.method, s.cutoffs) for s in rep.methods if s.cutoffs]
    if cut:
        stages_cut = [st for st in STAGE_ORDER if any(st in c["by_stage"] for _, c in cut)]
        stages_cut += sorted({st for _, c in cut for st in c["by_stage"]} - set(stages_cut))

        def share(n: int, c: int) -> str:
            return f"{c} / {n} ({c / n:.0%})" if n else "-"

        out.append((
            "Calls stopped by max_tokens (cut / answered)",
            ["method", "final answers", *stages_cut, "all calls"],
            [[m, share(c["final_items"], c["final_cut"])]
             + [share(c["by_stage"][st]["calls"], c["by_stage"][st]["cut"]) if st in c["by_stage"] else "-"
                for st in stages_cut]
             + [share(c["calls"], c["calls_cut"])] for m, c in cut],
        ))
    comps = sorted({k for s in rep.methods for k in s.components})
    if comps:
        out.append((
            "Per aspect / turn (mean, and how many verdicts gave it)",
            ["method", *comps],
            [[s.method] + [(f"{s.components[k][0]:.3f} (n={s.components[k][1]})" if k in s.components else "-")
                           for k in comps] for s in rep.methods],
        ))
    if any(s.judge_tokens or s.fallbacks or s.unparsed for s in rep.methods):
        out.append((
            "Evaluation judge (not part of any method's cost)",
            ["method", "judge tokens/item", "unparsed verdicts (left out of the means)", "items with no usable verdict"],
            [[s.method, _tok(s.judge_tokens), str(s.unparsed), str(s.fallbacks)] for s in rep.methods],
        ))
    return out


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    right = [i > 0 for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _model_lines(rep: BenchReport) -> list[str]:
    return [
        f"{s.method} ran: " + "; ".join(f"{st} {', '.join(ms)}" for st, ms in s.models.items())
        for s in rep.methods if s.models
    ]


def _setup_lines(rep: BenchReport) -> list[str]:
    out = _model_lines(rep)
    for m, s in rep.setup.items():
        tok = s.get("cost", {}).get("total", {}).get("total_tokens", 0)
        out.append(f"{m}: {len(s.get('roles', []))} roles ({s.get('source')}), generated once for the run: {tok} tokens, not counted per item.")
    return out


def _by_model(d: dict[str, dict[str, dict[str, int]]]) -> str:
    """'model c/n; C/N' per model: correct proposals in layer 1, then over every layer."""
    out = []
    for model, layers in d.items():
        first = layers.get("1", {"proposals": 0, "correct": 0})
        c = sum(v["correct"] for v in layers.values())
        n = sum(v["proposals"] for v in layers.values())
        out.append(f"{model} {first['correct']}/{first['proposals']}; {c}/{n}")
    return ", ".join(out) or "-"


def token_ratio(s: MethodStats, moa: MethodStats) -> tuple[float | None, int]:
    """Tokens per item over moa's, over the items both finished (on the same items that is
    the ratio of the means). Token counts vary several-fold between items, so means over
    different item sets (a run still going, a method added later) would compare the items
    as much as the methods. Returns (ratio, the items it is over when the sets differ, else
    0); None when they share no item."""
    common = set(s.tokens_by_item) & set(moa.tokens_by_item)
    den = sum(moa.tokens_by_item[i] for i in common)
    if not den:
        return None, 0
    same = set(s.tokens_by_item) == set(moa.tokens_by_item)
    return sum(s.tokens_by_item[i] for i in common) / den, 0 if same else len(common)


def _ratio(s: MethodStats) -> str:
    if s.ratio_vs_moa is None:
        return "-"
    return f"{s.ratio_vs_moa:.2f}" + (f" (on {s.ratio_items})" if s.ratio_items else "")


def render_markdown(reports: list[BenchReport]) -> str:
    lines = ["# Evaluation report", ""]
    lines.append(
        "Quality is the mean score per item with a percentile bootstrap 95% interval "
        f"({BOOTSTRAP_SAMPLES} resamples, seed 0). Tokens are prompt + completion tokens of every "
        "call of the method, from its trace; `tokens vs moa` is the method's tokens per item over "
        "moa's (where their item sets differ, over the items both finished: `(on N)`); `vs moa` is the mean per-item difference from moa over the items both scored, "
        "with its own bootstrap interval. `*` marks the Pareto front (no other method is both cheaper and better). "
        "Items that ended in an error are counted under errors and left out of the means."
    )
    for rep in reports:
        lines += ["", f"## {rep.benchmark}", ""]
        if rep.lower_is_better:
            lines += [f"{rep.metric}: lower is better.", ""]
        if rep.note:
            lines += [f"> {rep.note}", ""]
        for w in rep.warnings:
            lines += [f"> **Cut off:** {w}", ""]
        for title, header, rows in tables(rep):
            lines += [f"### {title}", "", _md_table(header, rows), ""]
        for note in rep.notes:
            lines += [f"- {note}"]
        if rep.notes:
            lines.append("")
        setup = _setup_lines(rep)
        for s in setup:
            lines.append(f"- {s}")
        if setup:
            lines.append("")
        for key, p in rep.plots.items():
            lines += [f"![{rep.benchmark} {key}]({p})", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_html(reports: list[BenchReport]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>smoa evaluation report</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em}"
        "td{text-align:right}td:first-child{text-align:left}th{background:#f3f3f3}"
        ".note{background:#fff6d6;padding:.5em}img{max-width:48%;margin:.5%}</style></head><body>",
        "<h1>Evaluation report</h1>",
        f"<p>Quality: mean score per item, percentile bootstrap 95% interval ({BOOTSTRAP_SAMPLES} resamples, seed 0). "
        "Tokens: prompt + completion of every call of the method, from its trace. "
        "<code>tokens vs moa</code>: tokens per item relative to moa (where the item sets differ, "
        "over the items both finished: <code>(on N)</code>). * marks the Pareto front.</p>",
    ]
    for rep in reports:
        parts.append(f"<h2>{e(rep.benchmark)}</h2>")
        if rep.lower_is_better:
            parts.append(f"<p>{e(rep.metric)}: lower is better.</p>")
        if rep.note:
            parts.append(f"<p class='note'>{e(rep.note)}</p>")
        for w in rep.warnings:
            parts.append(f"<p class='note'><b>Cut off:</b> {e(w)}</p>")
        for title, header, rows in tables(rep):
            parts.append(f"<h3>{e(title)}</h3><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            for r in rows:
                parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
            parts.append("</table>")
        for note in rep.notes:
            parts.append(f"<p class='note'>{e(note)}</p>")
        if _setup_lines(rep):
            parts.append("<ul>" + "".join(f"<li>{e(s)}</li>" for s in _setup_lines(rep)) + "</ul>")
        for key, p in rep.plots.items():
            parts.append(f"<img src='{e(p)}' alt='{e(rep.benchmark)} {e(key)}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(out: str | Path, plots: bool = True, seed: int = 0) -> dict[str, Any]:
    """Write DIR/report.md, DIR/report.html and the PNG plots; return what was written."""
    d = Path(out)
    if not d.is_dir():
        raise SmoaError(f"{d} is not a directory: give the --out directory of an eval run")
    reports = build_report(d, seed=seed)
    if not reports:
        raise SmoaError(f"the results store in {d} is empty: no finished items yet")
    files = []
    if plots:
        for rep in reports:
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in rep.benchmark)
            q = f"{safe}_quality_vs_tokens.png"
            t = f"{safe}_tokens_by_stage.png"
            plot_quality_vs_tokens(rep, d / q)
            plot_tokens_by_stage(rep, d / t)
            rep.plots = {"quality vs tokens": q, "tokens by stage": t}
            files += [str(d / q), str(d / t)]
    (d / "report.md").write_text(render_markdown(reports), encoding="utf-8")
    (d / "report.html").write_text(render_html(reports), encoding="utf-8")
    files = [str(d / "report.md"), str(d / "report.html"), *files]
    return {"files": files, "benchmarks": [summary_dict(r) for r in reports]}


def summary_dict(rep: BenchReport) -> dict[str, Any]:
    return {
        "benchmark": rep.benchmark,
        "metric": rep.metric,
        "lower_is_better": rep.lower_is_better,
        "methods": {
            s.method: {
                "n": s.n, "errors": s.errors, "quality": s.quality, "ci95": list(s.ci) if s.ci else None,
                "tokens_per_item": s.tokens, "tokens_by_stage": s.by_stage, "calls_per_item": s.calls,
                "wall_s_per_item": s.wall_s, "tokens_vs_moa": s.ratio_vs_moa,
                "tokens_vs_moa_items": s.ratio_items or s.n, "pareto": s.pareto,
                "delta_vs_moa": s.delta_vs_moa, "delta_ci95": list(s.delta_ci) if s.delta_ci else None,
                "selection": s.selection,
                "cut_at_max_tokens": s.cutoffs,
                "components": {k: {"mean": v[0], "n": v[1]} for k, v in s.components.items()},
                "unparsed_verdicts": s.unparsed,
                "models": s.models,
            }
            for s in rep.methods
        },
        "notes": rep.notes,
        "warnings": rep.warnings,
    }
