"""Pipelines as data: TOML in, validated specs, then live `Pipeline` objects.

A config file holds named backends and named pipelines:

    default = "mix"

    [backends.hosted]
    type = "openai"
    base_url = "https://api.example.com/v1"
    api_key_env = "EXAMPLE_API_KEY"

    [pipelines.mix]
    method = "smoa"
    n = 3
    k = 2
    proposers = [{ backend = "hosted", model = "some-model" }, { backend = "local" }]

Errors name the field that is wrong and say what to do.
"""

from __future__ import annotations

import os
import random
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .backends.base import Backend
from .cache import CachedBackend
from .policy import METHODS, Policy, get_policy, parse_shuffle, parse_stop, parse_verdict
from .types import ConfigError, Settings
from .wrappers import FallbackBackend, RetryingBackend, RetryPolicy

_CHOICE_PARSERS: dict[str | None, Any] = {"stop": parse_stop, "shuffle": parse_shuffle, "verdict": parse_verdict}

DEFAULT_DATASET = "Open-ended questions and tasks from users of a general-purpose assistant."
DEFAULT_TASK = "Answer the user's question correctly, clearly and helpfully."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendSpec(_Strict):
    type: str = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    model_path: str | None = None
    # local backends: the default model by name (smoa models list); agents may name another
    model: str | None = None
    n_ctx: int = Field(4096, ge=256)
    n_threads: int | None = Field(None, ge=1)
    timeout_s: float = Field(600.0, gt=0)  # per attempt of one call
    max_retries: int = Field(2, ge=0)  # older name of `retries` (used when retries is not set)
    # reliability (smoa.wrappers): retries of a failed call, with exponential backoff and jitter
    retries: int | None = Field(None, ge=0, le=20)
    backoff_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(20.0, ge=0)
    # openai backends: refuse prompts that cannot fit (estimated tokens); None: no check here
    context_window: int | None = Field(None, ge=16)
    structured: Literal["json_schema", "json_object", "none"] = "json_schema"
    # openai backends: "aiohttp" or "openai-sdk"; "builtin" and "auto" are deprecated
    # aliases of "aiohttp" (the backend warns)
    http_client: Literal["aiohttp", "openai-sdk", "builtin", "auto"] = "aiohttp"
    max_concurrency: int | None = Field(None, ge=1)
    # one request at a time, across every query (servers that load models on demand)
    sequential: bool = False
    options: dict[str, Any] = Field(default_factory=dict)

    def concurrency(self) -> int | None:
        return 1 if self.sequential else self.max_concurrency

    @field_validator("base_url")
    @classmethod
    def _valid_port(cls, v: str | None) -> str | None:
        """A port that is not a number from 1 to 65535 is named here (the URL is not repeated:
        it may carry a password)."""
        if v is None:
            return v
        from urllib.parse import urlsplit

        try:
            netloc = urlsplit(v).netloc
        except ValueError:
            return v  # the backend says what is wrong with the URL
        hostport = netloc.rpartition("@")[2]
        port = hostport.rpartition("]")[2] if hostport.startswith("[") else hostport
        if ":" not in port:
            return v
        text = port.rpartition(":")[2]
        if text == "":
            return v
        if not text.isascii() or not text.isdigit():
            raise ValueError(f"the port {text!r} is not a number: give a port from 1 to 65535, "
                             "e.g. http://127.0.0.1:8000/v1")
        if not 1 <= int(text) <= 65535:
            raise ValueError(f"the port {int(text)} is out of range: give a port from 1 to 65535, "
                             "e.g. http://127.0.0.1:8000/v1")
        return v


class AgentSpec(_Strict):
    backend: str | None = None
    model: str | None = None
    role: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: list[str] | None = None
    # reliability: override the backend's retries / per-attempt timeout for this agent, and
    # an agent to ask instead when this one still fails (its backend, model, settings)
    retries: int | None = Field(None, ge=0, le=20)
    timeout_s: float | None = Field(None, gt=0)
    fallback: AgentSpec | None = None

    def merged(self, base: AgentSpec | None) -> AgentSpec:
        if base is None:
            return self
        data = base.model_dump(exclude_none=True)
        data.update(self.model_dump(exclude_none=True))
        return AgentSpec(**data)


class PipelineSpec(_Strict):
    method: str = "smoa"  # a name in smoa.policy.POLICIES
    n: int | None = Field(None, ge=1, le=64)
    k: int | None = Field(None, ge=1)
    max_rounds: int | None = Field(None, ge=1, le=16)
    agent: AgentSpec = Field(default_factory=AgentSpec)  # defaults for every agent
    proposers: list[AgentSpec] = Field(default_factory=list)
    judge: AgentSpec | None = None
    moderator: AgentSpec | None = None
    aggregator: AgentSpec | None = None
    role_generator: AgentSpec | None = None
    roles: list[str] | None = None
    dataset: str = DEFAULT_DATASET
    task: str = DEFAULT_TASK
    seed: int | None = None
    # the method's policy choices, overridden per pipeline (None: the method's own; smoa.policy)
    stop: str | None = None  # "fixed", or rules joined by "+": agreement, moderator, verdict
    shuffle: bool | str | None = None  # "none" | "seed" (true) | "query"
    verdict: str | None = None  # "full" | "terse": how much the judge and moderator write
    description: str = ""
    cache: bool | None = None  # response cache (None: on; see smoa.cache)
    deadline_s: float | None = Field(None, gt=0)  # the whole query, all calls and retries
    min_proposers: int = Field(1, ge=1)  # fewer answers than this in a layer fail the query


    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}: use one of {', '.join(METHODS)}")
        return v

    @field_validator("stop", "shuffle", "verdict")
    @classmethod
    def _known_choice(cls, v: Any, info: ValidationInfo) -> Any:
        """A policy choice by name: the policy module's own parser says what is valid."""
        if v is not None:
            try:
                _CHOICE_PARSERS[info.field_name](v)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v

    def policy(self, where: str = "pipeline") -> Policy:
        """The method's policy with this pipeline's own choices (stop, shuffle, verdict)."""
        try:
            return get_policy(self.method).with_choices(stop=self.stop, shuffle=self.shuffle, verdict=self.verdict)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


class ConfigFile(_Strict):
    default: str | None = None
    cache: bool | None = None  # response cache for every pipeline of the file (None: on)
    backends: dict[str, BackendSpec] = Field(default_factory=dict)
    pipelines: dict[str, PipelineSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _register_secrets(self) -> ConfigFile:
        """Every secret the file names is masked in every output, whether or not the backend
        that holds it is ever built (a model may still write it)."""
        import os

        from .redaction import register_secret, register_url

        for b in self.backends.values():
            register_url(b.base_url)
            if b.api_key_env:
                register_secret(os.environ.get(b.api_key_env))
        return self


# ---------------------------------------------------------------------------
# live objects


@dataclass(frozen=True)
class Agent:
    name: str
    backend: Backend
    backend_name: str
    model: str
    settings: Settings = field(default_factory=Settings)
    role: str | None = None
    seed_given: bool = True  # False when settings.seed is the engine's random default


@dataclass(frozen=True)
class Pipeline:
    name: str
    method: str
    n: int
    k: int | None
    max_rounds: int
    proposers: tuple[Agent, ...]
    judge: Agent
    moderator: Agent
    aggregator: Agent
    role_generator: Agent
    roles: tuple[str, ...] | None = None
    dataset: str = DEFAULT_DATASET
    task: str = DEFAULT_TASK
    seed: int | None = None
    seed_given: bool = False  # the pipeline seed came from the user (else drawn at random)
    cache: bool = False  # responses of reproducible calls are cached
    deadline_s: float | None = None
    min_proposers: int = 1
    policy: Policy = None  # type: ignore[assignment]  # None: the method's own (set in __post_init__)

    def __post_init__(self) -> None:
        if self.policy is None:
            object.__setattr__(self, "policy", get_policy(self.method))

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "policy": self.policy.describe(),
            "n": self.n,
            "k": self.k,
            "max_rounds": self.max_rounds,
            "seed": self.seed,
            "seed_given": self.seed_given,
            "cache": self.cache,
            "proposers": [f"{a.backend_name}:{a.model}" for a in self.proposers],
            "judge": f"{self.judge.backend_name}:{self.judge.model}",
            "aggregator": f"{self.aggregator.backend_name}:{self.aggregator.model}",
        }


# ---------------------------------------------------------------------------
# backend registry

BackendFactory = Callable[[BackendSpec, str], Backend]
_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(type_name: str, factory: BackendFactory) -> None:
    """Make `type = "<type_name>"` usable in [backends.*] tables."""
    _FACTORIES[type_name] = factory


def _openai_factory(spec: BackendSpec, name: str) -> Backend:
    from .backends.openai_backend import OpenAIBackend

    if spec.model is not None:
        raise ConfigError("model: name the model on the agents (agent = { model = \"...\" }); "
                          "a backend's own model is for local backends")
    return OpenAIBackend(
        base_url=spec.base_url,
        api_key_env=spec.api_key_env,
        timeout_s=spec.timeout_s,
        max_retries=0,  # retries are smoa.wrappers.RetryingBackend's, so they are counted
        structured=spec.structured,
        max_concurrency=spec.concurrency(),
        name=name,
        context_window=spec.context_window,
        http_client=spec.http_client,
    )


def _local_factory(spec: BackendSpec, name: str) -> Backend:
    from .backends.local import LocalBackend

    return LocalBackend(
        model_path=spec.model_path,
        model=spec.model or spec.options.get("model"),
        n_ctx=spec.n_ctx,
        n_threads=spec.n_threads,
        name=name,
        # options.batching = false: no multi-sequence batches (every request alone)
        batching=bool(spec.options.get("batching", True)) and not spec.sequential,
        # options.kv_reuse = false: every prompt evaluated from an empty KV cache
        kv_reuse=bool(spec.options.get("kv_reuse", True)),
    )


register_backend("openai", _openai_factory)
register_backend("local", _local_factory)

BUILTIN_BACKENDS = {"local": BackendSpec(type="local")}


# ---------------------------------------------------------------------------
# loading and validation


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _validation_message(e: ValidationError, where: str) -> str:
    err = e.errors()[0]
    loc = _fmt_loc(err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field: remove it or check its spelling"
    elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
        msg = str(err["ctx"]["error"])  # our validators' own message, without pydantic's prefix
    elif err["type"] == "literal_error" and err["loc"] and err["loc"][-1] == "http_client":
        msg = f"unknown HTTP client {err.get('input')!r}: use aiohttp (the default) or openai-sdk"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{where}: {loc}: {msg}{more}"


# A config holds backends and pipelines, not data: a larger file is a mistake (e.g. -c /dev/zero).
MAX_CONFIG_BYTES = 1_000_000
# Deeper than this is a mistake too (the deepest real path is about 10: a few fallbacks); it
# also keeps pydantic and tomllib far from Python's recursion limit.
MAX_CONFIG_DEPTH = 32

_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_config_bytes(p: Path) -> bytes:
    """The file's bytes; anything but a regular file under MAX_CONFIG_BYTES is one clear error.

    Opened non-blocking and checked with fstat before any read, so a named pipe cannot hang
    the command and a device cannot be read until memory runs out."""
    def cannot(e: OSError) -> ConfigError:
        return ConfigError(f"cannot read config file {p}: {e.strerror or e.__class__.__name__}")

    is_dir = ConfigError(f"cannot read config file {p}: it is a directory: give the path of a .toml file")
    too_big = ConfigError(f"config file {p} is over {MAX_CONFIG_BYTES:,} bytes: a config holds backends and "
                          "pipelines, not data; give the right file")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except IsADirectoryError:
        raise is_dir from None
    except OSError as e:
        raise cannot(e) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise is_dir
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "not a regular file")
            raise ConfigError(f"cannot read config file {p}: it is {kind}, not a regular file: "
                              "give the path of a .toml file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise too_big
        chunks, size = [], 0
        while size <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise cannot(e) from None
    finally:
        os.close(fd)
    if size > MAX_CONFIG_BYTES:  # it grew while we read it
        raise too_big
    return b"".join(chunks)


def _too_deep(data: Any) -> tuple[str, ...] | None:
    """The path of the first value nested deeper than MAX_CONFIG_DEPTH (no recursion), or None."""
    todo: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while todo:
        value, path = todo.pop()
        if len(path) > MAX_CONFIG_DEPTH:
            return path
        if isinstance(value, dict):
            todo.extend((v, (*path, str(k))) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((v, (*path, f"[{i}]")) for i, v in enumerate(value))
    return None


def _show_path(path: tuple[str, ...], keep: int = 6) -> str:
    def join(parts: tuple[str, ...]) -> str:
        return "".join(x if x.startswith("[") else ("." if i else "") + x for i, x in enumerate(parts))

    return join(path) if len(path) <= keep else join(path[:keep]) + "..."


def read_config_data(path: str | Path) -> dict[str, Any]:
    """A config file as TOML data: read with limits, parsed, and checked for depth.

    The `[server]` table stays in the data (it is `smoa serve`'s; see load_config)."""
    p = Path(path)
    raw = read_config_bytes(p)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {p} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}): save it as UTF-8"
        ) from None
    deep = (f"nested more than {MAX_CONFIG_DEPTH} levels deep: flatten it "
            "(tables and arrays inside each other, or a long fallback chain)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(f"{p}: {deep}") from None
    where = _too_deep(data)
    if where is not None:
        raise ConfigError(f"{p}: {_show_path(where)}: {deep}")
    return data


def load_config(path: str | Path) -> ConfigFile:
    """Load and validate a config file.

    Its optional `[server]` table (README: Serving smoa) belongs to `smoa serve`, which reads
    it with smoa.server.settings; every other command accepts it and leaves it alone."""
    p = Path(path)
    data = read_config_data(p)
    server = data.pop("server", None)
    if server is not None and not isinstance(server, dict):
        raise ConfigError(f"{p}: server: must be a table ([server]), not {type(server).__name__}")
    if "pipelines" not in data and ("method" in data or "proposers" in data):
        # a file that describes one pipeline at top level
        top = {k: data.pop(k) for k in list(data) if k not in ("backends", "default")}
        data["pipelines"] = {"default": top}
        data.setdefault("default", "default")
    try:
        return ConfigFile(**data)
    except ValidationError as e:
        raise ConfigError(_validation_message(e, str(p))) from None


def preset(method: str) -> PipelineSpec:
    """The built-in pipeline for a method: runs on the embedded model, no config needed."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    return PipelineSpec(method=method, description=f"built-in {method} on the embedded model")


def pipeline_names(cfg: ConfigFile | None) -> list[str]:
    names = list(METHODS)
    if cfg is not None:
        names += [n for n in cfg.pipelines if n not in names]
    return names


def select_spec(cfg: ConfigFile | None, name: str | None, method: str | None = None) -> tuple[str, PipelineSpec]:
    """Pick a pipeline: by name from the config, else the config's default, else a preset."""
    if cfg is not None and cfg.pipelines:
        if name is None:
            name = cfg.default or (next(iter(cfg.pipelines)) if len(cfg.pipelines) == 1 else None)
            if name is None and method is None:
                raise ConfigError(
                    f"the config has several pipelines ({', '.join(cfg.pipelines)}): choose one with --pipeline or set default"
                )
        if name is not None and name in cfg.pipelines:
            spec = cfg.pipelines[name]
            if method is not None and method != spec.method:
                # the stop rule belongs to the pipeline's method; the new method brings its own
                spec = spec.model_copy(update={"method": method, "stop": None})
            return name, spec
        if name is not None and name not in METHODS:
            raise ConfigError(f"pipeline {name!r} is not in the config: use one of {', '.join(pipeline_names(cfg))}")
    m = method or name or "smoa"
    return m, preset(m)


def with_overrides(spec: PipelineSpec, **overrides: Any) -> PipelineSpec:
    """Apply CLI/API overrides (None means: keep)."""
    upd: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None and k in PipelineSpec.model_fields}
    agent_upd = {k: v for k, v in overrides.items() if v is not None and k in ("temperature", "max_tokens", "model")}
    if agent_upd:
        upd["agent"] = spec.agent.model_copy(update=agent_upd)
    if not upd:
        return spec
    data = spec.model_dump()
    data.update({k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in upd.items()})
    try:
        return PipelineSpec(**data)
    except ValidationError as e:
        raise ConfigError(_validation_message(e, "options")) from None


def build_pipeline(
    spec: PipelineSpec,
    name: str = "pipeline",
    backends: dict[str, BackendSpec] | None = None,
    instances: dict[str, Backend] | None = None,
    cache: bool | None = None,
    pool: dict[str, Backend] | None = None,
) -> Pipeline:
    """Validate the numbers, resolve backends, and build the live pipeline.

    `instances` maps backend names to ready objects (tests pass a ScriptedBackend here);
    they are used as given, never wrapped in the response cache.
    `pool` holds raw backends made by earlier builds from the same [backends] specs (a server
    or an eval run builds many pipelines over one set of connections); backends made here are
    added to it. Pool and instances hold raw backends only: every agent gets its own retry
    and fallback wrappers here, so no agent inherits another agent's (or pipeline's) wrappers.
    Backend objects are shared: agents naming the same backend use one instance.
    `cache`: response cache on/off (None: the spec's `cache`, else on; SMOA_NO_CACHE=1 wins).
    """
    where = f"pipelines.{name}"
    policy = spec.policy(where)
    n, k, max_rounds = policy.sizes(spec.n, spec.k, spec.max_rounds, len(spec.proposers), where)
    _check_counts(spec, n, where)
    b = _Build(
        known={**BUILTIN_BACKENDS, **(backends or {})},
        given=dict(instances or {}),
        pool=pool if pool is not None else {},
        use_cache=_cache_on(spec, cache),
        base=spec.agent.merged(AgentSpec(backend="local", temperature=0.7, max_tokens=256)),
    )
    base_seed = spec.seed if spec.seed is not None else random.randrange(2**31)
    proposers = _proposers(b, spec, n, base_seed, where)
    if policy.one_model:
        _check_one_model(proposers, spec.method, where)
    structured = {"temperature": 0.0, "max_tokens": 320}
    return Pipeline(
        name=name,
        method=spec.method,
        n=n,
        k=k,
        max_rounds=max_rounds,
        proposers=tuple(proposers),
        judge=_agent(b, spec.judge, "judge", f"{where}.judge", **structured),
        moderator=_agent(b, spec.moderator, "moderator", f"{where}.moderator", **structured),
        aggregator=_agent(b, spec.aggregator, "aggregator", f"{where}.aggregator"),
        role_generator=_agent(b, spec.role_generator, "role-generator", f"{where}.role_generator",
                              temperature=0.8, max_tokens=600),
        roles=tuple(spec.roles) if spec.roles is not None else None,
        dataset=spec.dataset,
        task=spec.task,
        seed=base_seed,
        seed_given=spec.seed is not None,
        cache=b.use_cache,
        deadline_s=spec.deadline_s,
        min_proposers=spec.min_proposers,
        policy=policy,
    )


@dataclass
class _Build:
    """What one `build_pipeline` call works with: the backend specs it knows, the ready
    instances it was given, the shared pool of raw backends, and what it made so far."""

    known: dict[str, BackendSpec]
    given: dict[str, Backend]
    pool: dict[str, Backend]
    use_cache: bool
    base: AgentSpec  # every agent's defaults
    made: dict[str, Backend] = field(default_factory=dict)  # given ones as they are, made ones cache-wrapped
    retrying: dict[tuple[str, Any], Backend] = field(default_factory=dict)  # (backend, RetryPolicy) -> wrapper


def _cache_on(spec: PipelineSpec, cache: bool | None) -> bool:
    """The response cache: the caller's choice, else the spec's, else on; SMOA_NO_CACHE=1 wins."""
    from .cache import cache_disabled_by_env

    on = cache if cache is not None else (spec.cache if spec.cache is not None else True)
    return on and not cache_disabled_by_env()


def _check_counts(spec: PipelineSpec, n: int, where: str) -> None:
    """The lists a pipeline gives must fit its n."""
    if spec.proposers and len(spec.proposers) not in (1, n):
        raise ConfigError(
            f"{where}.proposers has {len(spec.proposers)} entries but n = {n}: list n proposers, one, or none"
        )
    if spec.roles is not None and len(spec.roles) != n:
        raise ConfigError(f"{where}.roles has {len(spec.roles)} entries but n = {n}: give one role per proposer")
    if spec.min_proposers > n:
        raise ConfigError(f"{where}.min_proposers = {spec.min_proposers} is more than n = {n}: lower it")


def _new_backend(b: _Build, bname: str, field_name: str) -> Backend:
    """A raw backend made from its [backends.<bname>] spec (or a built-in type's defaults)."""
    bspec = b.known.get(bname)
    if bspec is None:
        if bname in _FACTORIES and bname != "openai":
            bspec = BackendSpec(type=bname)
        else:
            raise ConfigError(
                f"{field_name}: unknown backend {bname!r}: define [backends.{bname}] or use one of "
                f"{', '.join(sorted(set(b.known) | set(b.given)))}"
            )
    factory = _FACTORIES.get(bspec.type)
    if factory is None:
        raise ConfigError(
            f"backends.{bname}.type: unknown backend type {bspec.type!r}: use one of {', '.join(sorted(_FACTORIES))}"
        )
    if bspec.sequential and bspec.max_concurrency not in (None, 1):
        raise ConfigError(f"backends.{bname}: sequential = true allows one request at a time: drop max_concurrency")
    try:
        be = factory(bspec, bname)
    except ConfigError as e:
        raise ConfigError(f"backends.{bname}: {e}") from None
    if bspec.sequential:
        be.max_concurrency = 1
    return be


def _backend(b: _Build, bname: str, field_name: str) -> Backend:
    """The backend named `bname` for this pipeline: a given instance as it is; else the pooled
    (or a new, then pooled) raw backend, wrapped in the response cache when it is on."""
    if bname not in b.made:
        if bname in b.given:
            b.made[bname] = b.given[bname]
        else:
            if bname not in b.pool:
                b.pool[bname] = _new_backend(b, bname, field_name)
            raw = b.pool[bname]
            b.made[bname] = CachedBackend(raw) if b.use_cache else raw
    return b.made[bname]


def _with_retries(b: _Build, be: Backend, bname: str, a: AgentSpec) -> Backend:
    """`be` wrapped for this agent's retry policy (one wrapper per backend and policy)."""
    retry = _retry_policy(b.known.get(bname) if bname not in b.given else None, a)
    if retry is None:
        return be
    key = (bname, retry)
    if key not in b.retrying:
        b.retrying[key] = RetryingBackend(be, retry)
    return b.retrying[key]


def _settings(a: AgentSpec) -> Settings:
    return Settings(temperature=a.temperature, max_tokens=a.max_tokens, top_p=a.top_p, seed=a.seed,
                    stop=tuple(a.stop) if a.stop else None)


def _with_fallback(b: _Build, be: Backend, a: AgentSpec, field_name: str) -> Backend:
    """`be` wrapped so that a call it still fails goes to the agent's fallback. The fallback
    keeps the agent's sampling settings, not its backend, model or retry policy."""
    if a.fallback is None:
        return be
    fb = a.fallback.merged(a.model_copy(
        update={"fallback": None, "backend": None, "model": None, "retries": None, "timeout_s": None}))
    if fb.fallback is not None:
        raise ConfigError(f"{field_name}.fallback.fallback: one fallback per agent: remove the inner one")
    fb_name = fb.backend or "local"
    fb_raw = _backend(b, fb_name, f"{field_name}.fallback.backend")
    fb_model = _agent_model(fb_raw, fb.model, f"{field_name}.fallback")
    return FallbackBackend(be, _with_retries(b, fb_raw, fb_name, fb), fb_model, _settings(fb),
                           label=f"{fb_name}:{fb_model}")


def _agent(b: _Build, a: AgentSpec | None, agent_name: str, field_name: str, **defaults: Any) -> Agent:
    """One live agent: its settings over the pipeline's defaults (`defaults` over those), its
    backend, with its own retry and fallback wrappers."""
    base = b.base.model_copy(update=defaults) if defaults else b.base
    merged = (a or AgentSpec()).merged(base)
    bname = merged.backend or "local"
    raw = _backend(b, bname, f"{field_name}.backend")
    model = _agent_model(raw, merged.model, field_name)
    be = _with_fallback(b, _with_retries(b, raw, bname, merged), merged, field_name)
    return Agent(name=agent_name, backend=be, backend_name=bname, model=model, settings=_settings(merged),
                 role=merged.role)


def _proposers(b: _Build, spec: PipelineSpec, n: int, base_seed: int, where: str) -> list[Agent]:
    """n proposers from the listed ones (n of them, one for all, or none), each with its own
    seed (base_seed + i unless it has one) and its given role."""
    listed = len(spec.proposers) == n
    if spec.proposers:
        plist = spec.proposers if listed else [spec.proposers[0]] * n
    else:
        plist = [AgentSpec()] * n
    out = []
    for i, p in enumerate(plist):
        ag = _agent(b, p, f"proposer-{i + 1}", f"{where}.proposers[{i if listed else 0}]")
        if ag.settings.seed is None:
            # distinct, reproducible samples per proposer; user-given only if the pipeline seed is
            ag = replace(ag, settings=ag.settings.overlay(Settings(seed=base_seed + i)), seed_given=spec.seed is not None)
        if spec.roles is not None:
            ag = replace(ag, role=spec.roles[i])
        out.append(ag)
    return out


def _check_one_model(proposers: list[Agent], method: str, where: str) -> None:
    first = proposers[0]
    if any((p.backend_name, p.model) != (first.backend_name, first.model) for p in proposers):
        raise ConfigError(f"{where}.proposers: {method} samples one model n times: give one proposer")


def _retry_policy(bspec: BackendSpec | None, a: AgentSpec) -> RetryPolicy | None:
    """The RetryPolicy for an agent on a backend, or None when there is nothing to wrap.

    openai backends retry by default (`retries`, else `max_retries`: 2) and bound each attempt
    by `timeout_s`; other backends only when the config asks (retries or timeout_s set).
    Backends passed as ready instances are wrapped only for agent-level settings.
    """
    retries: int | None = a.retries
    timeout: float | None = a.timeout_s
    backoff, backoff_max = 0.5, 20.0
    if bspec is not None:
        is_http = bspec.type == "openai"
        if retries is None:
            if bspec.retries is not None:
                retries = bspec.retries
            elif is_http or "max_retries" in bspec.model_fields_set:
                retries = bspec.max_retries
        if timeout is None and (is_http or "timeout_s" in bspec.model_fields_set):
            timeout = bspec.timeout_s
        backoff, backoff_max = bspec.backoff_s, bspec.backoff_max_s
    if not retries and timeout is None:
        return None
    return RetryPolicy(retries=retries or 0, timeout_s=timeout, backoff_s=backoff, backoff_max_s=backoff_max)


def _agent_model(be: Backend, model: str | None, where: str) -> str:
    """The model name an agent's requests carry. Backends that run files themselves (local)
    turn an alias or path into the name of the file that will run, so traces record the
    model that really ran, and say here, before any call, when it is not installed."""
    canonical = getattr(be, "canonical_model", None)
    if canonical is None:
        return model or _default_model(be)
    try:
        return str(canonical(model))
    except ConfigError as e:
        raise ConfigError(f"{where}.model: {e}") from None


def _default_model(be: Backend) -> str:
    if be.kind == "local":
        from .backends.local import DEFAULT_MODEL

        return str(getattr(be, "model_name", DEFAULT_MODEL))
    if be.kind == "openai":
        raise ConfigError("an agent on an openai backend needs a model name: set model = \"...\"")
    return "default"


def resolve(
    config: str | Path | ConfigFile | None = None,
    pipeline: str | None = None,
    method: str | None = None,
    instances: dict[str, Backend] | None = None,
    pool: dict[str, Backend] | None = None,
    **overrides: Any,
) -> Pipeline:
    """One call from (config file, pipeline name, method, overrides) to a live Pipeline
    (`instances`, `pool`: see build_pipeline)."""
    cfg = load_config(config) if isinstance(config, str | Path) else config
    name, spec = select_spec(cfg, pipeline, method)
    spec = with_overrides(spec, **overrides)
    cache = cfg.cache if cfg is not None and spec.cache is None else None
    return build_pipeline(spec, name=name, backends=cfg.backends if cfg else None, instances=instances, cache=cache, pool=pool)
