"""Benchmarks of torch_ipfs.

- ``python -m bench --profile small|full --out DIR``: the suite against the peers
  (:mod:`bench.suite`; results in ``DIR/results.json``, ``DIR/report.md``, ``DIR/samples_per_s.png``).
- ``bench/bench_*.py``: single-purpose scripts (import, read, gateway, export throughput).
"""
