"""What one llama.cpp decode step costs for 1 and for 4 sequences: the ceiling of batching.

Batching m sequences can raise aggregate generation speed at most by m * t(1) / t(m), where
t(m) is the time of one `llama_decode` that carries one new token for each of m sequences
(the sampling and bookkeeping around it are small next to it). This measures t(1) and t(4)
on the embedded model as shipped (Q4_1) and on the same weights converted to other types
with `llama_model_quantize` (into a temporary folder), so the ceiling can be read per
weight type. Times are medians over `steps` decode calls after the prompt, n_threads as
the local backend would use them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import line

TYPES = ("Q4_1 (shipped)", "Q4_0", "Q8_0", "F16")


def _convert(src: str, dst: Path, type_name: str) -> str:
    import llama_cpp as L

    ftype = {"Q4_0": L.LLAMA_FTYPE_MOSTLY_Q4_0, "Q8_0": L.LLAMA_FTYPE_MOSTLY_Q8_0, "F16": L.LLAMA_FTYPE_MOSTLY_F16}[type_name]
    p = L.llama_model_quantize_default_params()
    p.ftype = ftype
    p.allow_requantize = True
    out = dst / f"model-{type_name}.gguf"
    rc = L.llama_model_quantize(src.encode(), str(out).encode(), p)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize to {type_name} failed ({rc})")
    return str(out)


def _measure(path: str, n_threads: int | None, steps: int, prompt_len: int = 40) -> dict[str, float]:
    """t(1), t(4) and prompt time on the model as the local backend loads it (its context,
    threads and multi-sequence KV cache), fed through its BatchDecoder's batch."""
    import llama_cpp as L

    from smoa.backends.local import get_model

    m = get_model(Path(path), 1024, n_threads)
    dec = m.decoder
    mem = L.llama_get_memory(m.llm.ctx)

    def decode_timed(n: int) -> float:
        t = time.perf_counter()
        dec._decode(n)
        return time.perf_counter() - t

    def step_times(k_seqs: int) -> list[float]:
        L.llama_memory_clear(mem, True)
        for s in range(k_seqs):  # a prompt per sequence, as a layer of proposers has
            for p in range(prompt_len):
                dec._put(p, 100 + p + s, p, s, False)
            dec._decode(prompt_len)
        out = []
        for k in range(steps):
            for s in range(k_seqs):
                dec._put(s, 200 + k, prompt_len + k, s, True)
            out.append(decode_timed(k_seqs))
        return out

    def prompt_time(n: int) -> float:
        L.llama_memory_clear(mem, True)
        for p in range(n):
            dec._put(p, 100 + p, p, 0, p == n - 1)
        return decode_timed(n)

    with m.lock:
        step_times(1)  # warm-up
        t1s, t4s, pts = [], [], []
        for _ in range(3):  # interleaved: load on the machine hits both alike
            t1s += step_times(1)
            t4s += step_times(4)
            pts.append(prompt_time(44) / 44)
        L.llama_memory_clear(mem, True)
    t1, t4 = statistics.median(t1s), statistics.median(t4s)
    return {"t1_ms": 1000 * t1, "t4_ms": 1000 * t4, "ceiling_4": 4 * t1 / t4,
            "prompt_ms_per_token": 1000 * statistics.median(pts), "gen_tok_s_1": 1 / t1, "gen_tok_s_4": 4 / t4,
            "file_mb": Path(path).stat().st_size / 1e6}


def run(steps: int = 30, n_threads: int | None = None, types: tuple[str, ...] = TYPES) -> dict[str, Any]:
    from smoa.backends.local import LocalBackend

    src = str(LocalBackend().path)
    out: dict[str, Any] = {"steps": steps, "n_threads": n_threads, "model": Path(src).name, "types": {}}
    with tempfile.TemporaryDirectory(prefix="smoa-steps-") as d:
        for t in types:
            path = src if t.startswith("Q4_1") else _convert(src, Path(d), t)
            out["types"][t] = _measure(path, n_threads, steps)
    return out


def report(res: dict[str, Any]) -> str:
    lines = [f"decode step cost: {res['model']} converted per weight type, median of {3 * res['steps']} steps; "
             "ceiling of 4-sequence batching = 4 * t(1) / t(4)"]
    for t, r in res["types"].items():
        lines.append(line(f"ceiling 4 * t(1) / t(4), {t}", r["ceiling_4"], fmt="{:.2f}",
                          note=f"t(1) {r['t1_ms']:.1f} ms, t(4) {r['t4_ms']:.1f} ms, batched {r['gen_tok_s_4']:.0f} tok/s, "
                               f"prompt {r['prompt_ms_per_token']:.1f} ms/token, {r['file_mb']:.0f} MB"))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
