"""Several generations on one llama.cpp context at once: multi-sequence decoding.

The proposers of a layer send their requests to the embedded model together. Run one
after another, each generation pays a full forward pass per token, and on a CPU a
forward pass of a small model costs about the same for 1 token as for 4: the weights
are read from memory once either way. Decoded together, each step feeds one token of
every live sequence into a single `llama_decode`, so 4 generations cost little more
than one.

    prompt:   shared prefix -> seq 0 (evaluated once) -> llama_memory_seq_cp to seqs 1..m-1
              each sequence's own suffix, all in one batch (logits at each last token)
    generate: one token per live sequence per llama_decode; each sequence samples with its
              own sampler chain (temperature, top_p, seed), stops on end-of-generation,
              a stop string or max_tokens

The sampler chain and the prompt tokens are those of `Llama.create_chat_completion`
(see `LocalBackend`), so at temperature 0 a batched generation follows the same greedy
path as an unbatched one, up to floating-point differences between batch shapes.

Needs a context made with `n_seq_max` >= the batch size and a unified KV cache
(`kv_unified = True`), which `smoa.backends.local` sets up.

KV reuse across calls. After a batch, each sequence's KV cells stay in the cache, and the
decoder remembers which tokens each sequence id holds (`resident`). The next call looks
for the resident sequence with the longest common prefix with each prompt and starts from
there: the sequence is cut back to that prefix (`llama_memory_seq_rm`), or, when two jobs
want the same one, the prefix is shared into a free sequence id (`llama_memory_seq_cp`,
which in a unified cache adds the id to the same cells: nothing is copied). Only the rest
of each prompt is evaluated. Sequences not used by a batch stay resident, least recently
used first out, while their cells and the batch's fit in the context. This is our own
code, not llama-cpp-python's prefix match, because that keeps one sequence and clears
every other one on its next call; llama.cpp itself offers the primitives (sequence
copy and removal), not a policy. A resident record is checked against the cache before
use (its last position must be where we left it, and llama-cpp-python's own path must
not have run since), so a cache cleared behind the decoder's back is never trusted.
Greedy outputs then differ from a cold evaluation only as llama.cpp's kernels for
different batch shapes differ (see `smoa.backends.batchcheck`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Set when the process shuts down (`smoa serve` on SIGTERM, once its grace period is over):
# every decode loop of the embedded model stops at its next token, so no worker thread keeps
# the process busy after its queries were cancelled (a decode cannot be interrupted mid-step).
ABORT = threading.Event()


def aborted(*_: Any) -> bool:
    """A llama-cpp-python stopping criterion: stop at the next token once ABORT is set."""
    return ABORT.is_set()


@dataclass
class GenJob:
    """One generation: prompt tokens (chat template and BOS already applied) and sampling."""

    tokens: list[int]
    max_tokens: int
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    typical_p: float = 1.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0  # over the last 64 tokens, as llama-cpp-python's Llama
    frequency_penalty: float = 0.0
    ignore_eos: bool = False  # benchmarks only: generate exactly max_tokens
    grammar: str | None = None  # GBNF (a JSON schema as llama-cpp-python converts it)
    grammar_root: str = "root"


@dataclass
class GenResult:
    text: str
    tokens: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    prompt_evaluated: int = 0  # prompt tokens evaluated for this sequence (the rest came from KV)
    # with generate(..., keep_logits=True): (sampled token, copy of the logits it was sampled
    # from) for every sampling step, the end-of-generation token included
    steps: list[tuple[int, Any]] = field(default_factory=list)


@dataclass
class BatchStats:
    sequences: int = 0
    prefix_tokens: int = 0  # evaluated once, shared by every sequence
    prompt_tokens: int = 0  # tokens of all prompts, as if each were evaluated alone
    prompt_evaluated: int = 0  # tokens actually evaluated (prefix once + suffixes)
    prompt_reused: int = 0  # tokens taken from the KV of earlier calls
    generated: int = 0
    decode_calls: int = 0
    prompt_s: float = 0.0
    generate_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def common_prefix(seqs: list[list[int]]) -> int:
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    i = 0
    while i < n and all(s[i] == first[i] for s in seqs):
        i += 1
    return i


class KVFull(RuntimeError):
    """llama_decode found no room in the KV cache for a batch."""


def kv_cells_needed(jobs: list[GenJob]) -> int:
    """KV cells a batch uses: the shared prefix once, each suffix and each answer."""
    pre = common_prefix([j.tokens for j in jobs]) if len(jobs) > 1 else 0
    pre = min(pre, min(len(j.tokens) for j in jobs) - 1) if jobs else 0
    return pre + sum(len(j.tokens) - pre + j.max_tokens for j in jobs)


class BatchDecoder:
    """Runs a list of GenJobs as one batch on a `llama_cpp.Llama`'s context.

    Not thread-safe: the caller holds the model's lock. With `reuse` (per call), the KV
    cells of earlier calls are kept and reused (see the module docstring); without it the
    cache is cleared before and after. Either way `Llama.reset()` is called, so the
    single-sequence path of llama-cpp-python re-evaluates its prompt instead of trusting a
    cache it did not fill.
    """

    def __init__(self, llm: Any) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llm
        self.ctx = llm.ctx
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_batch = int(llm.n_batch)
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self.n_seq_max = int(llama_cpp.llama_n_seq_max(self.ctx))
        self.capacity = max(self.n_batch, self.n_seq_max)
        self.batch = llama_cpp.llama_batch_init(self.capacity, 0, self.n_seq_max)
        self.eog = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)]
        self.last_stats = BatchStats()
        self.resident: dict[int, list[int]] = {}  # sequence id -> the tokens whose KV it holds
        self._used: dict[int, int] = {}  # sequence id -> when last used (LRU eviction)
        self._clock = 0

    def close(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass

    @property
    def mem(self) -> Any:
        return self.lib.llama_get_memory(self.ctx)

    def forget(self) -> None:
        """Clear the KV cache and what the decoder knows of it."""
        self.lib.llama_memory_clear(self.mem, True)
        self.resident.clear()
        self._used.clear()
        self.llm.reset()

    # -- batch filling ---------------------------------------------------------
    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = 1 if logits else 0

    def _decode(self, n: int) -> None:
        self.batch.n_tokens = n
        rc = self.lib.llama_decode(self.ctx, self.batch)
        if rc == 1:
            raise KVFull("llama_decode found no room in the KV cache for the batch")
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}): the KV cache is full or the batch is invalid")
        self.last_stats.decode_calls += 1

    # -- sampling ----------------------------------------------------------------
    def _sampler(self, job: GenJob) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if job.ignore_eos and self.eog:
            arr = (lib.llama_logit_bias * len(self.eog))()
            for i, t in enumerate(self.eog):
                arr[i].token = t
                arr[i].bias = float("-inf")
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(self.n_vocab, len(self.eog), arr))
        if job.presence_penalty or job.frequency_penalty:  # Llama._init_sampler's penalties, first in the chain
            lib.llama_sampler_chain_add(
                chain, lib.llama_sampler_init_penalties(self.n_vocab, 64, 1.0, job.frequency_penalty, job.presence_penalty)
            )
        if job.grammar is not None:
            # where Llama._init_sampler puts it: before greedy / top_k
            g = lib.llama_sampler_init_grammar(self.vocab, job.grammar.encode("utf-8"), job.grammar_root.encode("utf-8"))
            if not g:
                lib.llama_sampler_free(chain)
                raise ValueError("llama.cpp rejected the grammar made from the JSON schema")
            lib.llama_sampler_chain_add(chain, g)
        if job.temperature == 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            # the chain of Llama._init_sampler (repeat penalty 1.0 is a no-op and left out)
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(job.top_k))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_typical(job.typical_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(job.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(job.min_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(job.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(job.seed & 0xFFFFFFFF))
        return chain

    # -- the batch -----------------------------------------------------------------
    def logits(self, i: int) -> Any:
        """A copy of the logits of batch row `i` of the last decode (numpy array, n_vocab)."""
        import numpy as np

        ptr = self.lib.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def _check_resident(self) -> None:
        """Drop resident records the cache no longer matches (cleared or used behind our back)."""
        if self.llm.n_tokens != 0:  # llama-cpp-python's own path ran on this context since
            self.forget()
            return
        for s, toks in list(self.resident.items()):
            if self.lib.llama_memory_seq_pos_max(self.mem, s) != len(toks) - 1:
                self.lib.llama_memory_seq_rm(self.mem, s, -1, -1)
                del self.resident[s]
                self._used.pop(s, None)

    def _plan(self, jobs: list[GenJob]) -> tuple[list[int], list[int], list[int | None]]:
        """Sequence id, reused prefix length and source sequence (to share from) per job.

        Each job starts from the resident sequence with the longest common prefix (at least
        one token of its own left to evaluate). The job with the longest match takes that
        sequence over; others that match it share its prefix into a fresh id. Jobs with no
        match get a free id, or the least recently used one this batch does not need, and
        resident sequences are evicted until the batch fits the context."""
        m = len(jobs)
        best: list[tuple[int, int | None]] = []
        for j in jobs:
            cap = len(j.tokens) - 1
            b: tuple[int, int | None] = (0, None)
            for s, toks in self.resident.items():
                n = min(common_prefix([j.tokens, toks]), cap)
                if n > b[0]:
                    b = (n, s)
            best.append(b)
        seq: list[int | None] = [None] * m
        src: list[int | None] = [None] * m
        reuse = [0] * m
        taken: set[int] = set()
        for i in sorted(range(m), key=lambda i: -best[i][0]):
            n, held = best[i]
            if held is None:
                continue
            reuse[i] = n
            if held in taken:
                src[i] = held
            else:
                seq[i] = held
                taken.add(held)
        need = sum(len(j.tokens) - r + j.max_tokens for j, r in zip(jobs, reuse, strict=True))
        kept = sum(reuse[i] for i in range(m) if seq[i] is not None)
        others = sorted((s for s in self.resident if s not in taken), key=lambda s: self._used.get(s, 0))
        while others and kept + need + sum(len(self.resident[s]) for s in others) > self.n_ctx:
            self._drop(others.pop(0))
        free = [s for s in range(self.n_seq_max) if s not in taken and s not in self.resident]
        for i in range(m):
            if seq[i] is None:
                s = free.pop(0) if free else others.pop(0)
                self._drop(s)
                seq[i] = s
                taken.add(s)
        if kept + need + sum(len(self.resident[s]) for s in self.resident if s not in taken) > self.n_ctx:
            raise KVFull("the batch does not fit beside the reused prefixes")
        return [int(s) for s in seq], reuse, src  # type: ignore[arg-type]

    def _drop(self, s: int) -> None:
        self.lib.llama_memory_seq_rm(self.mem, s, -1, -1)
        self.resident.pop(s, None)
        self._used.pop(s, None)

    def generate(self, jobs: list[GenJob], keep_logits: bool = False, reuse: bool = True,
                 on_text: Callable[[int, str], None] | None = None) -> list[GenResult]:
        """Run the jobs as one batch. `keep_logits` records, per sequence, every sampled token
        with the logits it came from (for tests that check the batch against one sequence).
        `reuse` starts from the KV of earlier calls where prompts share a prefix with them;
        `reuse=False` evaluates every prompt from an empty cache. `on_text(job index, text)`
        is called with each new piece of a sequence's text as it is generated (a stop string
        is never sent: text that could begin one is held back)."""
        if not jobs:
            return []
        m = len(jobs)
        if m > self.n_seq_max:
            raise ValueError(f"{m} sequences, but the context holds at most {self.n_seq_max}")
        if kv_cells_needed(jobs) > self.n_ctx:
            raise ValueError(f"the batch needs {kv_cells_needed(jobs)} KV cells, the context has {self.n_ctx}")
        if reuse:
            self._check_resident()
            emitted = [False]

            def emit(s: int, text: str) -> None:
                emitted[0] = True
                on_text(s, text)  # type: ignore[misc]

            try:
                plan = self._plan(jobs)
                return self._generate(jobs, plan, keep_logits, emit if on_text else None, keep=True)
            except KVFull:
                if emitted[0]:
                    raise
            # no room beside the resident sequences (or cells too fragmented): once more
            # from an empty cache
        self.forget()
        plan = (list(range(m)), [0] * m, [None] * m)
        return self._generate(jobs, plan, keep_logits, on_text, keep=reuse)

    def _generate(self, jobs: list[GenJob], plan: tuple[list[int], list[int], list[int | None]], keep_logits: bool,
                  on_text: Callable[[int, str], None] | None, keep: bool) -> list[GenResult]:
        lib = self.lib
        mem = self.mem
        m = len(jobs)
        seq, r, src = plan
        r = list(r)
        st = BatchStats(sequences=m, prompt_tokens=sum(len(j.tokens) for j in jobs), prompt_reused=sum(r))
        self.last_stats = st
        self.llm.reset()
        evaluated = [0] * m
        fed: list[list[int]] = [list(j.tokens[: r[i]]) for i, j in enumerate(jobs)]
        ok = False
        samplers = [self._sampler(j) for j in jobs]
        out: list[list[int]] = [[] for _ in jobs]
        done: list[str | None] = [None] * m
        steps: list[list[tuple[int, Any]]] = [[] for _ in jobs]
        sent = [""] * m
        try:
            t0 = time.perf_counter()
            # 0. reused prefixes: share into fresh ids first, then cut the taken-over sequences
            for i in range(m):
                if src[i] is not None:
                    lib.llama_memory_seq_cp(mem, src[i], seq[i], 0, r[i])
            for i in range(m):
                if src[i] is None and r[i]:
                    lib.llama_memory_seq_rm(mem, seq[i], r[i], -1)
            # 1. the prefix all prompts share, once, in the sequence that already holds most
            #    of it; every sequence keeps >= 1 token of its own
            pre = common_prefix([j.tokens for j in jobs]) if m > 1 else 0
            pre = max(0, min(pre, min(len(j.tokens) for j in jobs) - 1))
            if pre > min(r):
                a = max(range(m), key=lambda i: r[i])
                toks0 = jobs[a].tokens
                for start in range(r[a], pre, self.n_batch):
                    n = min(self.n_batch, pre - start)
                    for i in range(n):
                        self._put(i, toks0[start + i], start + i, seq[a], False)
                    self._decode(n)
                evaluated[a] += max(0, pre - r[a])
                r[a] = max(r[a], pre)
                for b in range(m):
                    if b != a and r[b] < pre:
                        lib.llama_memory_seq_rm(mem, seq[b], -1, -1)
                        lib.llama_memory_seq_cp(mem, seq[a], seq[b], 0, pre)
                        r[b] = pre
                st.prefix_tokens = pre
            fed = [list(j.tokens[: r[i]]) for i, j in enumerate(jobs)]
            # 2. every suffix, packed into as few decodes as fit; logits at each last token
            pending = [(s, p) for s, j in enumerate(jobs) for p in range(r[s], len(j.tokens))]
            first_tok: dict[int, int] = {}
            k = 0
            while k < len(pending):
                chunk = pending[k : k + self.n_batch]
                last_idx: dict[int, int] = {}
                for i, (s, p) in enumerate(chunk):
                    is_last = p == len(jobs[s].tokens) - 1
                    self._put(i, jobs[s].tokens[p], p, seq[s], is_last)
                    if is_last:
                        last_idx[s] = i
                self._decode(len(chunk))
                for s, p in chunk:
                    fed[s].append(jobs[s].tokens[p])
                    evaluated[s] += 1
                for s, i in last_idx.items():
                    first_tok[s] = lib.llama_sampler_sample(samplers[s], self.ctx, i)
                    if keep_logits:
                        steps[s].append((first_tok[s], self.logits(i)))
                k += len(chunk)
            st.prompt_evaluated = sum(evaluated)
            st.prompt_s = time.perf_counter() - t0

            # 3. generation: one token per live sequence per decode
            t1 = time.perf_counter()
            texts: list[str] = [""] * m
            pos = [len(j.tokens) for j in jobs]
            nxt = [first_tok[s] for s in range(m)]
            while True:
                if ABORT.is_set():  # shutting down: stop at this token
                    break
                live: list[int] = []
                for s in range(m):
                    if done[s] is not None:
                        continue
                    tok = nxt[s]
                    if not jobs[s].ignore_eos and lib.llama_vocab_is_eog(self.vocab, tok):
                        done[s] = "stop"
                        continue
                    out[s].append(tok)
                    if jobs[s].stop or on_text is not None:
                        texts[s] = self._text(jobs[s], out[s])
                    if jobs[s].stop and any(x in texts[s] for x in jobs[s].stop):
                        done[s] = "stop"
                        continue
                    if on_text is not None:
                        self._emit(on_text, s, jobs[s], texts[s], sent)
                    if len(out[s]) >= jobs[s].max_tokens:
                        done[s] = "length"
                        continue
                    live.append(s)
                if not live:
                    break
                for i, s in enumerate(live):
                    self._put(i, nxt[s], pos[s], seq[s], True)
                    pos[s] += 1
                self._decode(len(live))
                for i, s in enumerate(live):
                    fed[s].append(nxt[s])
                    nxt[s] = lib.llama_sampler_sample(samplers[s], self.ctx, i)
                    if keep_logits:
                        steps[s].append((nxt[s], self.logits(i)))
            st.generate_s = time.perf_counter() - t1
            st.generated = sum(len(o) for o in out)
            ok = True
        finally:
            for smp in samplers:
                lib.llama_sampler_free(smp)
            if ok and keep:
                self._clock += 1
                for i in range(m):
                    self.resident[seq[i]] = fed[i]
                    self._used[seq[i]] = self._clock
            else:
                self.forget()
            self.llm.reset()
        results = []
        for s, j in enumerate(jobs):
            text = self._text(j, out[s])
            cut = min((text.find(x) for x in j.stop if x and x in text), default=-1)
            if cut >= 0:
                text = text[:cut]
            if on_text is not None and text.startswith(sent[s]) and len(text) > len(sent[s]):
                on_text(s, text[len(sent[s]):])
            results.append(
                GenResult(text=text, tokens=out[s], prompt_tokens=len(j.tokens), completion_tokens=len(out[s]),
                          finish_reason=done[s] or "length", steps=steps[s], prompt_evaluated=evaluated[s])
            )
        return results

    @staticmethod
    def _emit(on_text: Callable[[int, str], None], s: int, job: GenJob, text: str, sent: list[str]) -> None:
        """Send the new part of `text`, holding back a tail that could begin a stop string."""
        hold = max((k for x in job.stop if x for k in range(1, len(x)) if text.endswith(x[:k])), default=0)
        safe = text[: len(text) - hold] if hold else text
        if safe.startswith(sent[s]) and len(safe) > len(sent[s]):
            on_text(s, safe[len(sent[s]):])
            sent[s] = safe

    def _text(self, job: GenJob, toks: list[int]) -> str:
        return self.llm.detokenize(toks, prev_tokens=job.tokens).decode("utf-8", errors="ignore")
