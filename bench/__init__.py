"""smoa benchmarks: `python -m bench [name ...]` (names: critical, throughput, batched, cost, cache)."""
