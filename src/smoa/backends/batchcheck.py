"""Check a batched generation against the same sequences decoded alone (tests and scripts).

llama.cpp does not promise the same logits for a row decoded in a batch of 1 and in a batch
of n: ggml picks other kernels for 1-row and n-row matrix products (and other ones again
on AVX2, AVX-512 and AMX machines), and they round differently. So "batched equals
unbatched, token for token" is not something a test may assert; it held on one CPU and
failed on another (issue 10).

What does hold on every CPU, and what `compare_batch` measures:

1. Every token a greedy batch chose is the argmax of the logits the batch computed (exact:
   both read the same array).
2. Replaying each sequence's own path alone, the batch's logits differ from the single
   sequence's by no more than llama.cpp's own disagreement with itself, measured on the
   same machine and the same sequence (the "floor"): the path decoded token by token
   (1-row products, as an unbatched generation runs) against the same path decoded in one
   call (n-row products), and against the token-by-token replay beside another sequence's
   cells in the KV cache (attention over masked cells, as in a batch). A batch
   row is an n-row product too, so on a correct batch it is at least as close to the
   one-shot replay as the two replays are to each other; `bound` allows that figure
   twice over (the batch against the 1-row replay is then within floor + floor by the
   triangle inequality). A wrong position, sequence id or KV copy changes the attention
   input itself, and the logits then move by whole units, far past the bound.
3. Where the single sequence disagrees with the batch's choice, it is a near-tie by that
   same measure: the single sequence's own best logit beats the batch's token by at most
   twice the bound.

`floor` is taken over every step of every sequence of the batch, and never below
`MIN_FLOOR`, a float32 rounding allowance at the logits' magnitude, so that a CPU whose
two kernels happen to agree exactly still gets a sane bound.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from smoa.backends.batching import BatchDecoder, GenJob

MIN_REL_FLOOR = 1e-4  # of the largest |logit|: float32 sums of ~1e3 terms round about this much


def _fresh(dec: BatchDecoder) -> None:
    dec.forget()


def _decode_rows(dec: BatchDecoder, tokens: list[int], start: int, want_from: int) -> list[Any]:
    """Decode tokens[start:] for sequence 0 at their own positions, in chunks of n_batch, and
    return the logits of every row at or after `want_from`."""
    out: list[Any] = []
    p = start
    while p < len(tokens):
        n = min(dec.n_batch, len(tokens) - p)
        for i in range(n):
            dec._put(i, tokens[p + i], p + i, 0, p + i >= want_from)
        dec._decode(n)
        out.extend(dec.logits(i) for i in range(n) if p + i >= want_from)
        p += n
    return out


def replay_one_row(dec: BatchDecoder, prompt: list[int], path: list[int],
                   neighbour: list[int] | None = None) -> list[Any]:
    """Logits before each token of `path`: the prompt in one call, then one token per call.

    With `neighbour`, those tokens are first decoded as another sequence (id 1) on the same
    context, so attention runs over a KV cache that also holds masked cells of another
    sequence, as in a batch, though no batching code of ours is involved."""
    _fresh(dec)
    try:
        if neighbour:
            for start in range(0, len(neighbour), dec.n_batch):
                n = min(dec.n_batch, len(neighbour) - start)
                for i in range(n):
                    dec._put(i, neighbour[start + i], start + i, 1, False)
                dec._decode(n)
        out = _decode_rows(dec, prompt, 0, len(prompt) - 1)
        for t, tok in enumerate(path[:-1]):
            dec._put(0, tok, len(prompt) + t, 0, True)
            dec._decode(1)
            out.append(dec.logits(0))
        return out
    finally:
        _fresh(dec)


def replay_one_shot(dec: BatchDecoder, prompt: list[int], path: list[int]) -> list[Any]:
    """Logits before each token of `path`, from one call over prompt + path (n-row products)."""
    _fresh(dec)
    try:
        return _decode_rows(dec, prompt + path[:-1], 0, len(prompt) - 1)
    finally:
        _fresh(dec)


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set[str]()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model or platform.processor() or "?", flags


def cpu_simd() -> str:
    """The instruction sets ggml chooses kernels by: avx2, avx512*, amx*, avx_vnni."""
    _, flags = _cpuinfo()
    simd = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "avx_vnni"))
    return " ".join(simd) or "no avx2/avx512/amx"


def cpu_summary() -> str:
    model, _ = _cpuinfo()
    return f"{model} ({os.cpu_count()} cpus; {cpu_simd()})"


def compare_batch(dec: BatchDecoder, jobs: list[GenJob], prime: list[GenJob] | None = None) -> dict[str, Any]:
    """Generate `jobs` as one batch (greedy jobs: temperature 0) and compare with replays.

    From an empty cache; or, with `prime`, after generating `prime` first, so the batch
    starts from the KV state that `prime` left (KV reuse) while the replays evaluate every
    prompt from scratch: the same bound then covers reuse."""
    import numpy as np

    if any(j.temperature != 0 for j in jobs):
        raise ValueError("compare_batch checks greedy jobs (temperature 0)")
    dec.forget()
    if prime:
        dec.generate(prime)
    results = dec.generate(jobs, keep_logits=True, reuse=bool(prime))
    reused = dec.last_stats.prompt_reused
    seqs = []
    floor = 0.0
    scale = 0.0
    for q, (job, res) in enumerate(zip(jobs, results, strict=True)):
        path = [tok for tok, _ in res.steps]
        batch = [lg for _, lg in res.steps]
        one = replay_one_row(dec, job.tokens, path)
        shot = replay_one_shot(dec, job.tokens, path)
        near = replay_one_row(dec, job.tokens, path, neighbour=jobs[(q + 1) % len(jobs)].tokens)
        steps = []
        for t, tok in enumerate(path):
            b, o, s, w = batch[t], one[t], shot[t], near[t]
            big = float(np.max(np.abs(o)))
            scale = max(scale, big)
            d1, dn, fl, fw = (float(np.max(np.abs(x - y))) for x, y in ((b, o), (b, s), (o, s), (o, w)))
            floor = max(floor, fl, fw)
            steps.append({
                "step": t, "token": int(tok),
                "abs_1row": d1, "rel_1row": d1 / big, "abs_nrow": dn, "rel_nrow": dn / big, "abs_floor": max(fl, fw),
                "argmax_ok": int(np.argmax(b)) == tok,
                # how far the single sequence's best logit is above the batch's choice (0: same choice)
                "margin": float(np.max(o) - o[tok]),
            })
        seqs.append({"tokens": path, "text": res.text, "steps": steps})
    floor = max(floor, MIN_REL_FLOOR * scale)
    return {"floor": floor, "bound": 2 * floor, "scale": scale, "sequences": seqs, "prompt_reused": reused}


def violations(rep: dict[str, Any], what: str = "batch") -> list[str]:
    """What in a `compare_batch` report breaks points 1-3 above, one line each (empty: all
    hold). `what` names the generation under test in the lines ("batch", "reused")."""
    bound = rep["bound"]
    out = []
    for s, seq in enumerate(rep["sequences"]):
        for st in seq["steps"]:
            where = f"sequence {s}, step {st['step']} (bound {bound:.3f} on {cpu_summary()})"
            if not st["argmax_ok"]:
                out.append(f"{where}: the {what} token is not the argmax of its own logits")
            if st["abs_1row"] > bound:
                out.append(f"{where}: {what} vs token-by-token logits differ by {st['abs_1row']:.3f}")
            if st["abs_nrow"] > bound:
                out.append(f"{where}: {what} vs one-shot logits differ by {st['abs_nrow']:.3f}")
            if st["margin"] > 2 * bound:
                out.append(f"{where}: the sequence alone prefers another token by {st['margin']:.3f}")
    return out
