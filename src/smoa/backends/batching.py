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
"""

from __future__ import annotations

import threading
import time
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


@dataclass
class GenResult:
    text: str
    tokens: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    # with generate(..., keep_logits=True): (sampled token, copy of the logits it was sampled
    # from) for every sampling step, the end-of-generation token included
    steps: list[tuple[int, Any]] = field(default_factory=list)


@dataclass
class BatchStats:
    sequences: int = 0
    prefix_tokens: int = 0  # evaluated once, shared by every sequence
    prompt_tokens: int = 0  # tokens of all prompts, as if each were evaluated alone
    prompt_evaluated: int = 0  # tokens actually evaluated (prefix once + suffixes)
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


def kv_cells_needed(jobs: list[GenJob]) -> int:
    """KV cells a batch uses: the shared prefix once, each suffix and each answer."""
    pre = common_prefix([j.tokens for j in jobs]) if len(jobs) > 1 else 0
    pre = min(pre, min(len(j.tokens) for j in jobs) - 1) if jobs else 0
    return pre + sum(len(j.tokens) - pre + j.max_tokens for j in jobs)


class BatchDecoder:
    """Runs a list of GenJobs as one batch on a `llama_cpp.Llama`'s context.

    Not thread-safe: the caller holds the model's lock. The KV cache is cleared before
    and left empty after (`Llama.reset()` is called, so the single-sequence path of
    llama-cpp-python re-evaluates its prompt instead of trusting a stale cache).
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

    def close(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass

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

    def generate(self, jobs: list[GenJob], keep_logits: bool = False) -> list[GenResult]:
        """Run the jobs as one batch. `keep_logits` records, per sequence, every sampled token
        with the logits it came from (for tests that check the batch against one sequence)."""
        if not jobs:
            return []
        m = len(jobs)
        if m > self.n_seq_max:
            raise ValueError(f"{m} sequences, but the context holds at most {self.n_seq_max}")
        if kv_cells_needed(jobs) > self.n_ctx:
            raise ValueError(f"the batch needs {kv_cells_needed(jobs)} KV cells, the context has {self.n_ctx}")
        lib = self.lib
        st = BatchStats(sequences=m, prompt_tokens=sum(len(j.tokens) for j in jobs))
        self.last_stats = st
        mem = lib.llama_get_memory(self.ctx)
        lib.llama_memory_clear(mem, True)
        self.llm.reset()
        samplers = [self._sampler(j) for j in jobs]
        try:
            t0 = time.perf_counter()
            # 1. the shared prefix, once, in sequence 0; every sequence keeps >= 1 token of its own
            pre = common_prefix([j.tokens for j in jobs]) if m > 1 else 0
            pre = max(0, min(pre, min(len(j.tokens) for j in jobs) - 1))
            st.prefix_tokens = pre
            toks0 = jobs[0].tokens
            for start in range(0, pre, self.n_batch):
                n = min(self.n_batch, pre - start)
                for i in range(n):
                    self._put(i, toks0[start + i], start + i, 0, False)
                self._decode(n)
            for s in range(1, m):
                if pre:
                    lib.llama_memory_seq_cp(mem, 0, s, -1, -1)
            # 2. every suffix, packed into as few decodes as fit; logits at each last token
            pending = [(s, p) for s, j in enumerate(jobs) for p in range(pre, len(j.tokens))]
            steps: list[list[tuple[int, Any]]] = [[] for _ in jobs]
            first_tok: dict[int, int] = {}
            k = 0
            while k < len(pending):
                chunk = pending[k : k + self.n_batch]
                last_idx: dict[int, int] = {}
                for i, (s, p) in enumerate(chunk):
                    is_last = p == len(jobs[s].tokens) - 1
                    self._put(i, jobs[s].tokens[p], p, s, is_last)
                    if is_last:
                        last_idx[s] = i
                self._decode(len(chunk))
                for s, i in last_idx.items():
                    first_tok[s] = lib.llama_sampler_sample(samplers[s], self.ctx, i)
                    if keep_logits:
                        steps[s].append((first_tok[s], self.logits(i)))
                k += len(chunk)
            st.prompt_evaluated = pre + len(pending)
            st.prompt_s = time.perf_counter() - t0

            # 3. generation: one token per live sequence per decode
            t1 = time.perf_counter()
            out: list[list[int]] = [[] for _ in jobs]
            done: list[str | None] = [None] * m
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
                    if jobs[s].stop:
                        texts[s] = self._text(jobs[s], out[s])
                        if any(x in texts[s] for x in jobs[s].stop):
                            done[s] = "stop"
                            continue
                    if len(out[s]) >= jobs[s].max_tokens:
                        done[s] = "length"
                        continue
                    live.append(s)
                if not live:
                    break
                for i, s in enumerate(live):
                    self._put(i, nxt[s], pos[s], s, True)
                    pos[s] += 1
                self._decode(len(live))
                for i, s in enumerate(live):
                    nxt[s] = lib.llama_sampler_sample(samplers[s], self.ctx, i)
                    if keep_logits:
                        steps[s].append((nxt[s], self.logits(i)))
            st.generate_s = time.perf_counter() - t1
            st.generated = sum(len(o) for o in out)
        finally:
            for smp in samplers:
                lib.llama_sampler_free(smp)
            lib.llama_memory_clear(mem, True)
            self.llm.reset()
        results = []
        for s, j in enumerate(jobs):
            text = self._text(j, out[s])
            cut = min((text.find(x) for x in j.stop if x and x in text), default=-1)
            if cut >= 0:
                text = text[:cut]
            results.append(
                GenResult(text=text, tokens=out[s], prompt_tokens=len(j.tokens), completion_tokens=len(out[s]),
                          finish_reason=done[s] or "length", steps=steps[s])
            )
        return results

    def _text(self, job: GenJob, toks: list[int]) -> str:
        return self.llm.detokenize(toks, prev_tokens=job.tokens).decode("utf-8", errors="ignore")
