"""What bench/run.py (the benchmark) and bench/soak.py (the soak test) are built from.

- common: paths, the mock's settings, LiteLLM's lock and venv, BenchError, progress logging
- scenarios: the requests in each wire format, the format x provider pairs, the scenarios
- client: the load generators (a raw asyncio HTTP/1.1 client, its split form, and httpx)
- measure: the closed loop, the probes, the rounds of a scenario over its targets
- stats: percentiles, ratios, CPU / RSS / fd readings of a process and its children
- servers: the ASGI servers' commands, CPU pinning, a process's children
- processes: the mock and the proxies as child processes, their stores, clean-up on signals
- litellm: installing LiteLLM from its lock, configuring and starting it
- gateways: what a benchmark run starts, and what failed to start
- sections: the sections of a benchmark run in order, and how long each is measured
- chunks, idle, cold: the chunk-forwarding delay, the open idle streams, the cold first
  request (each measures and renders its section)
- targets: issue 12's targets, met or missed per server
- tables, report: the benchmark's tables and report, the machine, the written results
- baseline: an older revision's proxy, served from a git worktree
- soak_mock, soak_load, soak_stores, soak_checks, soak_report: the soak's faults, load,
  stores, checks and report
"""
