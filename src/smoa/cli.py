"""The `smoa` command: a thin layer over the library. Errors are one line and exit 2."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from .cliutil import fail, save_cli_trace
from .policy import METHODS
from .types import SmoaError

OTEL_HELP = ("Export the trace as OpenTelemetry spans over OTLP/HTTP (also: SMOA_OTEL=1 or "
             "OTEL_EXPORTER_OTLP_ENDPOINT; needs pip install 'smoa[otel]').")




def _warn(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
          line: str | None = None) -> None:
    """Warnings (e.g. a deprecated config value) as one line, like errors."""
    from .redaction import redact

    click.echo(f"smoa: warning: {' '.join(redact(str(message)).split())}", err=True)


def _read_stdin() -> str:
    """Standard input as UTF-8 text; undecodable bytes are one clear error, not a traceback."""
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"standard input is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}): convert it to UTF-8")


def _common(f: Any) -> Any:
    opts = [
        click.option("--config", "-c", "config", type=click.Path(path_type=Path), help="TOML config with backends and pipelines."),
        click.option("--pipeline", "-p", help="Pipeline name from the config (default: the config's default)."),
        click.option("--method", "-m", type=str, help=f"Method: {', '.join(METHODS)} (default smoa)."),
        click.option("-n", "n", type=int, help="Number of proposers."),
        click.option("-k", "k", type=int, help="Responses the judge keeps (smoa)."),
        click.option("--rounds", "max_rounds", type=int, help="Maximum rounds of proposers."),
        click.option("--seed", type=int, help="Seed for sampling and the judge's shuffle."),
        click.option("--max-tokens", type=int, help="max_tokens for every agent."),
        click.option("--temperature", type=float, help="Temperature for proposers and aggregator."),
        click.option("--model", type=str,
                     help="Model for every agent: a local model's name (smoa models list) or, on a config's HTTP backends, theirs."),
        click.option("--no-cache", "no_cache", is_flag=True, default=False,
                     help="Do not use the response cache (temperature-0 and seeded calls are cached by default)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _overrides(kw: dict[str, Any]) -> dict[str, Any]:
    method = kw.get("method")
    if method is not None and method not in METHODS:
        fail(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    out = {k: kw.get(k) for k in ("n", "k", "max_rounds", "seed", "max_tokens", "temperature", "model")}
    if kw.get("no_cache"):
        out["cache"] = False
    return out


_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class _OneLineErrors(click.Group):
    """click's usage errors (a value that is not a number, an unknown option) as one line,
    like every other error of smoa, instead of click's four lines of usage and error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except _NO_ARGS_IS_HELP as e:  # `smoa` alone, or a group alone: its help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "smoa"
            fail(f"{e.format_message()} (see {where} --help)", e.exit_code)
        except click.ClickException as e:
            fail(e.format_message(), e.exit_code)
        except click.Abort:
            fail("interrupted", 130)
        sys.exit(rv if isinstance(rv, int) else 0)  # ctx.exit(code), --help and --version return a code



class LazyGroup(_OneLineErrors):
    """Subcommands that live in heavier modules (eval, server, models) are imported only when
    they run or their own help is asked for: `smoa --help` and `smoa ask` do not pay for them.
    Their one-line help is kept here, so the command list needs no import (a test checks it
    equals the command's own)."""

    LAZY: dict[str, tuple[str, str, str]] = {
        "eval": ("smoa.eval.cli_eval", "eval_cmd", "Evaluate methods on a benchmark; every finished item goes to OUT/results.sqlite at once."),
        "report": ("smoa.eval.cli_eval", "report_cmd", "Write OUT/report.md and OUT/report.html (tables and PNG plots) from an eval directory."),
        "serve": ("smoa.server.commands", "serve", "Serve the pipelines as an OpenAI-compatible API (/v1) with a trace viewer (/traces)."),
        "trace": ("smoa.server.commands", "trace", "Look at saved traces: list them, or draw one as an HTML page."),
        "models": ("smoa.models.cli", "models", "Local models by name: list them, install one from PyPI, show where it is, remove it."),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.LAZY))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        got = super().get_command(ctx, cmd_name)
        if got is None and cmd_name in self.LAZY:
            from importlib import import_module

            mod, attr, _ = self.LAZY[cmd_name]
            got = getattr(import_module(mod), attr)
            self.add_command(got, cmd_name)
        return got

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.LAZY and name not in self.commands:
                rows.append((name, self.LAZY[name][2]))
            else:
                cmd = self.get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smoa")
def main() -> None:
    """Sparse Mixture-of-Agents: many LLMs answer, a judge keeps the best k,
    a moderator stops early, an aggregator writes the answer."""
    warnings.showwarning = _warn


@main.command()
@click.argument("prompt", required=False)
@_common
@click.option("--json", "as_json", is_flag=True, help="Print answer, cost and trace as JSON.")
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path), help="Write the trace as JSON to this file.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the answer.")
@click.option("--no-store", is_flag=True, help="Do not save the trace in the trace store (also: SMOA_NO_TRACE_STORE=1).")
@click.option("--otel", is_flag=True, help=OTEL_HELP)
def ask(prompt: str | None, as_json: bool, trace_file: Path | None, quiet: bool, no_store: bool, otel: bool, **kw: Any) -> None:
    """Answer PROMPT (or standard input) with a mixture of agents."""
    from . import otel as otel_mod
    from .api import run
    from .trace import format_cost

    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            fail("no prompt: give one as an argument or on standard input")
        prompt = _read_stdin()
    overrides = _overrides(kw)
    try:
        otel_mod.cli_setup(otel)  # smoa.run exports the trace when this is on
    except SmoaError as e:
        fail(str(e))
    try:
        import asyncio

        result = asyncio.run(run(prompt, kw.get("method"), config=kw.get("config"), pipeline=kw.get("pipeline"), **overrides))
    except SmoaError as e:
        otel_mod.flush()
        tr = e.trace
        if trace_file and tr is not None:
            _write(trace_file, tr.to_json())
        if tr is not None:
            save_cli_trace(tr, enabled=not no_store)
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as e:  # a bug, not a user mistake: still one line (SMOA_DEBUG=1 shows the traceback)
        if os.environ.get("SMOA_DEBUG"):
            raise
        fail(f"unexpected {type(e).__name__}: {e} (a bug in smoa: please report it; SMOA_DEBUG=1 shows where)", 1)
    otel_mod.flush()
    if trace_file:
        _write(trace_file, result.trace.to_json())
    stored = save_cli_trace(result.trace, enabled=not no_store)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    click.echo(result.answer.strip())
    if not quiet:
        click.echo("", err=True)
        click.echo(describe_run(result.trace.to_dict()), err=True)
        click.echo(format_cost(result.cost), err=True)
        if stored:
            click.echo(f"trace {stored[:12]} saved: smoa trace view {stored[:12]}", err=True)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror}")


def describe_run(t: dict[str, Any]) -> str:
    """A few lines on what the mixture did: roles, selections, stop decision, finish."""
    lines = [f"method {t['method']} ({t['pipeline']}), {len(t['calls'])} calls, {t['wall_s']:.1f} s"]
    if t.get("config", {}).get("roles_source"):
        lines.append(f"roles: {t['config']['roles_source']}")
    for lay in t["layers"]:
        n_ok = sum(1 for p in lay["proposals"] if p["ok"])
        s = f"layer {lay['layer']}: {n_ok}/{len(lay['proposals'])} proposals"
        j = lay.get("judge")
        if j:
            kept = [i + 1 for i in lay["kept"]]
            s += f"; judge kept proposers {kept}"
            if j.get("fallback"):
                s += f" (fallback: {j['fallback']})"
        m = lay.get("moderator")
        if m:
            s += f"; moderator: {'stop' if m['stop'] else 'continue'}"
            if m.get("fallback"):
                s += f" (fallback: {m['fallback']})"
            elif m.get("reasoning"):
                s += f" ({_short(m['reasoning'])})"
        lines.append(s)
    fin = t.get("finish", {})
    lines.append(f"stopped: {t.get('stop_reason')}; finish: {fin.get('kind', '?')}")
    if t.get("health"):
        from .trace import format_health

        h = format_health(t["health"])
        if h:
            lines.append(h)
    return "\n".join(lines)


def _short(s: str, n: int = 80) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


@main.command()
@click.option("--task", "-t", help="What the agents will be asked to do.")
@click.option("--dataset", "-d", help="What the questions are like.")
@click.option("-n", "n", type=int, default=None, help="How many roles (default: the pipeline's n).")
@click.option("--config", "-c", "config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pipeline", "-p")
@click.option("--refresh", is_flag=True, help="Ignore the role cache and generate anew.")
@click.option("--json", "as_json", is_flag=True)
def roles(task: str | None, dataset: str | None, n: int | None, config: Path | None, pipeline: str | None, refresh: bool, as_json: bool) -> None:
    """Generate (or show cached) proposer roles for a task: r_i = LLM(D, T)."""
    from .config import resolve
    from .engine import POLICIES, Engine
    from .trace import Trace

    try:
        pipe = resolve(config, pipeline=pipeline, method="smoa", n=n, task=task, dataset=dataset)
        eng = Engine(pipe, role_cache=not refresh)
        tr = Trace(method="roles")
        import asyncio

        got = asyncio.run(eng.assign_roles(tr, POLICIES["smoa"]))
    except SmoaError as e:
        fail(str(e))
    if as_json:
        click.echo(json.dumps({"roles": got, "source": tr.config.get("roles_source"), "cost": tr.cost()}, indent=2))
        return
    for i, r in enumerate(got, 1):
        click.echo(f"{i}. {r}")
    click.echo(f"(source: {tr.config.get('roles_source')}{', fallback roles added: ' + str(tr.config['roles_fallback']) if tr.config.get('roles_fallback') else ''})", err=True)


if __name__ == "__main__":
    main()
