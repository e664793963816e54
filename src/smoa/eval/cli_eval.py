"""`smoa eval` and `smoa report`: thin commands over smoa.eval.runner and smoa.eval.report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ..cliutil import fail as _fail
from ..policy import METHODS
from ..types import SmoaError


def _unexpected(e: Exception) -> None:
    """A bug, not a user mistake: still one line (SMOA_DEBUG=1 shows the traceback)."""
    if os.environ.get("SMOA_DEBUG"):
        raise e
    _fail(f"unexpected {type(e).__name__}: {e} (a bug in smoa: please report it; SMOA_DEBUG=1 shows where)", 1)


# option: (flag, smallest value, what it means) -- checked before any work, so a bad value is one line
_AT_LEAST = {
    "limit": ("--limit", 0, "the number of items to evaluate"),
    "offset": ("--offset", 0, "the number of items to skip"),
    "concurrency": ("-j/--concurrency", 1, "the number of (item, method) pairs in flight"),
    "chunk_size": ("--chunk-size", 1, "the number of items per Ray task"),
    "judge_max_tokens": ("--judge-max-tokens", 1, "the evaluation judge's token limit"),
}


def _check_numbers(kw: dict[str, Any]) -> None:
    for name, (flag, low, what) in _AT_LEAST.items():
        v = kw.get(name)
        if v is not None and v < low:
            _fail(f"{flag} {v}: {what} must be at least {low}: give a whole number from {low} up")


@click.command("eval")
@click.option("--benchmark", "-b", required=True, help="Benchmark name, e.g. gsm8k, math500, humaneval, just-eval.")
@click.option("--methods", "-m", default="single,moa,smoa", show_default=True,
              help=f"Comma list of methods ({', '.join(METHODS)}) or pipeline names from --config.")
@click.option("--data", "-d", type=click.Path(path_type=Path),
              help="Data folder (holding <set>/...) or the set's file. Default: $SMOA_DATA_DIR or ../shared/data.")
@click.option("--bfcl-mode", type=click.Choice(["official", "lenient"]), default="official", show_default=True,
              help="BFCL scoring: official (bfcl-eval's decoder and AST checker: comparable with the "
                   "leaderboard) or lenient (smoa's reading: also JSON, fenced or prose calls, positional "
                   "arguments; not comparable). Same as the benchmark names bfcl-lenient[-<category>].")
@click.option("--limit", type=int, help="Evaluate at most this many items.")
@click.option("--offset", type=int, default=0, show_default=True, help="Skip this many items first.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (results.sqlite; a rerun resumes it).")
@click.option("--config", "-c", type=click.Path(dir_okay=False, path_type=Path), help="TOML config with backends and pipelines.")
@click.option("--concurrency", "-j", type=int, default=8, show_default=True, help="(item, method) pairs in flight at once.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: asyncio in this process; ray: Ray tasks (pip install 'smoa[ray]', RAY_ADDRESS to join a cluster).")
@click.option("--chunk-size", type=int, help="Items per Ray task (default: --concurrency, at most 16).")
@click.option("--judge-backend", help="Backend (from --config, or 'local') of the evaluation judge for judged sets. Default: the embedded model.")
@click.option("--judge-model", help="Model of the evaluation judge.")
@click.option("--judge-max-tokens", type=int, default=512, show_default=True)
@click.option("-n", "n", type=int, help="Number of proposers.")
@click.option("-k", "k", type=int, help="Responses the judge keeps (the smoa methods).")
@click.option("--rounds", "max_rounds", type=int, help="Maximum rounds of proposers.")
@click.option("--seed", type=int, default=None,
              help="Seed for sampling and the judge's shuffle, for every method [default: each pipeline's own seed from --config, else 0].")
@click.option("--max-tokens", type=int, help="max_tokens for every agent.")
@click.option("--temperature", type=float, help="Temperature for proposers and aggregator.")
@click.option("--cache/--no-cache", default=False, show_default=True,
              help="Answer repeated reproducible calls from the response cache (tokens are still counted).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--otel", is_flag=True, help="Export every item's trace as OpenTelemetry spans over OTLP/HTTP "
              "(also: SMOA_OTEL=1 or OTEL_EXPORTER_OTLP_ENDPOINT; needs pip install 'smoa[otel]').")
def eval_cmd(benchmark: str, methods: str, out: Path, as_json: bool, progress: bool | None, bfcl_mode: str,
             otel: bool, **kw: Any) -> None:
    """Evaluate methods on a benchmark; every finished item goes to OUT/results.sqlite at once."""
    from .. import otel as otel_mod
    from .benchmarks import bfcl_benchmark_name
    from .runner import print_summary, run_eval

    _check_numbers(kw)
    benchmark = bfcl_benchmark_name(benchmark, bfcl_mode)
    overrides = {k: kw.pop(k) for k in ("n", "k", "max_rounds", "seed", "max_tokens", "temperature")}
    try:
        otel_mod.cli_setup(otel)  # each item's trace is exported where the item finishes
        summary = run_eval(
            benchmark, methods, out=out, data=kw["data"], limit=kw["limit"], offset=kw["offset"],
            config=kw["config"], concurrency=kw["concurrency"], executor=kw["executor"],
            chunk_size=kw["chunk_size"], judge_backend=kw["judge_backend"], judge_model=kw["judge_model"],
            judge_max_tokens=kw["judge_max_tokens"], cache=kw["cache"], progress=progress, **overrides,
        )
    except SmoaError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted: finished items are saved; rerun the same command to resume", 130)
    except Exception as e:
        _unexpected(e)
    finally:
        otel_mod.flush()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)


@click.command("report")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--no-plots", is_flag=True, help="Tables only.")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON too.")
def report_cmd(out: Path, no_plots: bool, as_json: bool) -> None:
    """Write OUT/report.md and OUT/report.html (tables and PNG plots) from an eval directory."""
    from .report import write_report

    try:
        res = write_report(out, plots=not no_plots)
    except SmoaError as e:
        _fail(str(e))
    except Exception as e:
        _unexpected(e)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    for f in res["files"]:
        click.echo(f)
