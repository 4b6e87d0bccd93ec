"""What bench/run.py (the benchmark) and bench/soak.py (the soak test) are built from.

- common: paths, the mock's settings, BenchError, progress logging
- scenarios: the requests the benchmark sends and the scenarios it measures
- client: the load generators (a raw asyncio HTTP/1.1 client, and httpx)
- measure: the closed loop, the probes, the rounds of a scenario
- stats: percentiles, ratios, CPU / RSS / fd readings of a process
- processes: the mock and the proxy as child processes, their stores, clean-up on signals
- baseline: an older revision's proxy, served from a git worktree
- report: the benchmark's markdown report, the machine it ran on, the written results
- soak_mock, soak_load, soak_stores, soak_checks, soak_report: the soak's faults, load,
  stores, checks and report
"""
