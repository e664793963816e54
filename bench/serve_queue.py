"""16 concurrent openai-SDK requests against `smoa serve --max-in-flight 2` (issue 12).

    PYTHONPATH=src python -m bench.serve_queue                  # with the queue (default)
    PYTHONPATH=src python -m bench.serve_queue --max-queue 0    # 429 as soon as both slots are busy

The upstream is smoa.fakeserver (0.1 s a call); the pipeline a 2-proposer moa (3 calls in
two steps, about 0.2 s a query). The SDK does not retry: every status is the server's first.
"""

from __future__ import annotations

import concurrent.futures as cf
import pathlib
import sys
import tempfile
import time

import openai

from smoa.testing import ServerProcess

CONFIG = """[backends.up]
type = "openai"
base_url = "{url}"
max_retries = 0

[pipelines.mix]
method = "moa"
n = 2
max_rounds = 1
agent = {{ backend = "up", model = "m" }}
"""


def main(extra: list[str], rounds: int = 3, clients: int = 16) -> None:
    d = pathlib.Path(tempfile.mkdtemp())
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--latency", "0.1"]) as up:
        (d / "c.toml").write_text(CONFIG.format(url=up.base_url))
        argv = ["python", "-m", "smoa", "serve", "--config", str(d / "c.toml"), "--port", "{port}",
                "--max-in-flight", "2", "--no-store", "--log-level", "warning", *extra]
        with ServerProcess(argv, ready_path="/health", env={"SMOA_NO_CACHE": "1"}) as srv:
            c = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=120)

            def ask(i: int) -> tuple[int, float]:
                t = time.perf_counter()
                try:
                    c.chat.completions.create(model="mix", messages=[{"role": "user", "content": f"q{i}"}])
                    return 200, time.perf_counter() - t
                except openai.APIStatusError as e:
                    return e.status_code, time.perf_counter() - t

            for r in range(rounds):
                t0 = time.perf_counter()
                with cf.ThreadPoolExecutor(clients) as pool:
                    res = list(pool.map(ask, range(clients)))
                wall = time.perf_counter() - t0
                codes = {s: sum(1 for x in res if x[0] == s) for s in sorted({x[0] for x in res})}
                lat = sorted(x[1] for x in res)
                print(f"round {r}: statuses {codes}, wall {wall:.2f} s, "
                      f"latency p50 {lat[len(lat) // 2]:.2f} s, max {lat[-1]:.2f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
