"""The serving benchmark: `agentserve bench` (`make bench-serving`).

Our server and a bare gRPC echo server of the same service are each started in their own
process and driven, in turn and under the same machine conditions, by load-generator processes;
the medians of the repeats, the ratios ours/echo and the verdict on the targets of issue 5 are
written to docs/serving-benchmark.md and docs/results/serving.json. The hot-reload scenario runs
against a second instance of our server only, publishing a new policy version mid-window.

    echo.py      the echo server (`python -m agentserve.bench.echo`) and its launcher
    scenarios.py the scenarios (method, callers, client processes, batch size, reload)
    load.py      the load-generator worker processes (grpc.aio clients)
    reload.py    the hot-reload scenario's model repository and how it publishes a new version
    stats.py     percentiles, medians over repeats, ratios, the targets and their verdicts
    report.py    the markdown page, from the stored JSON only
    runner.py    starts everything, alternates the targets, stores the results
    breakdown.py `--breakdown`: the latency of one Act call stage by stage (stages.py: the
                 stage servers)
    gpu.py       `--gpu`: the torch CUDA runtime against the CPU runtimes (the GPU target)
    gpu_report.py  its verdicts and page, from the stored JSON
"""
