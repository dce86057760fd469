"""The `agentserve` command: train | evaluate | evaluate-log | serve | health | simulate | demo |
benchmark | bench | algos.

Each subcommand imports what it needs when it runs, so the client-only install (no torch) can
still run `agentserve simulate`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agentserve.errors import AgentserveError, ConfigError


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from trainer.loop import RunOptions, train

    result = train(
        RunOptions(
            algorithm=args.algo,
            env_id=args.env,
            seed=args.seed,
            timesteps=args.timesteps,
            overrides=tuple(args.param),
            run_dir=args.run_dir,
            out_repo=args.out,
            name=args.name,
            eval_freq=args.eval_freq,
            eval_episodes=args.eval_episodes,
            progress=not args.no_progress,
            resume=args.resume,
            threads=args.threads,
            ignore_env_mask=args.ignore_env_mask,
            safety=args.safety,
        )
    )
    print(
        f"trained {result.timesteps} steps in {result.wall_seconds:.1f} s; "
        f"run folder {result.run_dir}"
    )
    if result.best_eval is not None:
        ev = result.best_eval
        print(f"best evaluation: {ev.mean:.2f} +- {ev.std:.2f} over {len(ev.returns)} episodes")
    if result.artifact is not None:
        print(f"exported {result.artifact}")
    return 0


def _find_artifact(args: argparse.Namespace) -> Path:
    if args.path is not None:
        path: Path = args.path
        if (path / "manifest.json").exists():
            return path
        versions = sorted((int(p.name) for p in path.glob("*") if p.name.isdigit()), reverse=True)
        if versions:
            return path / str(versions[0])
        raise ConfigError(f"{path} is neither a policy version folder nor a policy folder")
    if args.policy is None:
        raise ConfigError("name an artifact folder, or --policy NAME (with --model-repo)")
    from service.server import default_model_repo

    repo = args.model_repo or default_model_repo()
    args.path = repo / args.policy
    if args.version:
        return Path(args.path) / str(args.version)
    return _find_artifact(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from agentserve.manifest import load_manifest
    from service.policy import ServedPolicy
    from trainer.evaluation import evaluate

    policy = ServedPolicy(load_manifest(_find_artifact(args)), args.runtime)
    env_id = args.env or policy.manifest.env_id
    rng = np.random.default_rng(args.seed)

    def act(observation: np.ndarray, mask: np.ndarray | None) -> int | np.ndarray:
        flags = [] if mask is None else mask.tolist()
        return policy.decide(observation.tolist(), flags, True, rng).action

    # On the env it was trained on, with the arguments it was trained with (e.g. a bandit's
    # fixed problem); another env id gets its defaults.
    trained_kwargs = policy.manifest.training.get("env_kwargs")
    same_env = env_id == policy.manifest.env_id and isinstance(trained_kwargs, dict)
    env_kwargs = trained_kwargs if same_env else None
    result = evaluate(act, env_id, args.episodes, seed=args.seed, env_kwargs=env_kwargs)
    label = f"{policy.name}/{policy.version}"
    print(f"{label} on {env_id} ({policy.runtime.name} runtime), {args.episodes} episodes:")
    print(f"  returns {', '.join(f'{r:g}' for r in result.returns)}")
    print(f"  mean {result.mean:.2f} +- {result.std:.2f}; success rate {result.success_rate:.2f}")
    return 0


def cmd_evaluate_log(args: argparse.Namespace) -> int:
    """Off-policy evaluation of a discrete policy from decision logs (agentserve.ope)."""
    from agentserve.manifest import load_manifest
    from agentserve.ope import evaluate, format_report, read_decision_log, target_probabilities
    from service.policy import ServedPolicy

    if not 0.0 <= args.gamma <= 1.0:
        raise ConfigError(f"--gamma must lie in [0, 1], got {args.gamma}")
    records = read_decision_log(args.log)
    artifact = argparse.Namespace(path=args.policy, policy=None, model_repo=None, version=0)
    policy = ServedPolicy(load_manifest(_find_artifact(artifact)))
    report = evaluate(records, target_probabilities(policy, records), args.gamma)
    logged = sorted({f"{r.policy}/{r.version}" for r in records})
    print(
        f"target {policy.name}/{policy.version}, {report.decisions} logged decisions in "
        f"{report.episodes} episodes (logged by {', '.join(logged[:3])}"
        f"{', ...' if len(logged) > 3 else ''})"
        + (f", gamma {args.gamma:g}" if report.multi_step else "")
    )
    print(format_report(report))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from service.batching import BatchingConfig
    from service.server import ServerConfig, default_model_repo, run

    if args.decision_log is not None and not args.online:
        raise ConfigError("--decision-log records online decisions: name a policy with --online")
    if args.device != "cpu" and args.runtime is not None and args.runtime != "torch":
        raise ConfigError(
            f"--device {args.device} is where the torch runtime runs; --runtime {args.runtime} "
            "runs on the CPU (use --runtime torch)"
        )
    if args.device != "cpu" and args.runtime is None:
        logging.getLogger("agentserve.cli").warning(
            "--device %s applies to policies served by the torch runtime only; add "
            "--runtime torch to serve every policy with it",
            args.device,
        )
    return run(
        ServerConfig(
            model_repo=args.model_repo or default_model_repo(),
            host=args.host,
            port=args.port,
            metrics_port=args.metrics_port,
            grace_seconds=args.grace,
            runtime=args.runtime,
            device=args.device,
            runtime_threads=args.runtime_threads,
            ready_file=args.ready_file,
            safety_config=args.safety_config,
            batching=BatchingConfig(args.max_batch, args.max_wait_ms / 1000.0, args.max_queue),
            max_connection_age=args.max_connection_age,
            watch_interval=args.watch_interval,
            pins_file=args.pins,
            online=tuple(args.online),
            state_dir=args.state_dir,
            snapshot_every=args.snapshot_every,
            decision_log=args.decision_log,
            admin_port=args.admin_port,
            admin_host=args.admin_host,
            admin_token_file=args.admin_token_file,
            feedback_token_file=args.feedback_token_file,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
        )
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    import statistics

    from agentserve.client import Client
    from agentserve.simulate import run_episodes

    with Client(args.target, timeout=args.timeout) as client:
        client.wait_ready(args.timeout)
        returns = run_episodes(
            client,
            args.env,
            args.policy,
            args.episodes,
            seed=args.seed,
            deterministic=not args.stochastic,
            on_episode=lambda i, ret, n: print(f"episode {i}: return {ret:g} ({n} steps)"),
        )
    spread = statistics.pstdev(returns)
    print(
        f"mean return {statistics.fmean(returns):.2f} +- {spread:.2f} over {len(returns)} episodes"
    )
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """One `grpc.health.v1` Check against a running server (the container's HEALTHCHECK).

    Prints one line; exit 0 when the service is SERVING, 1 otherwise (not serving, unknown
    service, no answer, or no health client installed). Never 2: Docker reserves it.
    """
    import grpc

    service = args.service or "(server)"
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        print(
            "agentserve health: needs grpcio-health-checking: pip install 'agentserve[serve]'",
            file=sys.stderr,
        )
        return 1
    from agentserve.channel import open_channel

    request = health_pb2.HealthCheckRequest(service=args.service)
    tls = {"tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    try:
        opened = open_channel(args.target, **tls)
    except ConfigError as error:  # exit 1, not 2 (see above)
        print(f"agentserve health: {error}", file=sys.stderr)
        return 1
    with opened as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(request, timeout=args.timeout)
        except grpc.RpcError as error:
            code = error.code()
            name = code.name if code is not None else "UNKNOWN"
            if code == grpc.StatusCode.NOT_FOUND:
                reason = f"service {args.service!r} unknown to the server"
            elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                reason = f"no answer within {args.timeout:g} s"
            else:
                reason = " ".join(str(error.details() or "").split())
            print(f"{args.target} {service}: {name}: {reason}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{args.target} {service}: {status}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from agentserve.demo import run_demo

    return run_demo(args.model_repo, args.episodes)


def _summary(doc: str | None, width: int = 100) -> str:
    """The first sentence of a module docstring's first paragraph, shortened to `width`."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    sentence = paragraph if end < 0 else paragraph[: end + 1]
    return sentence if len(sentence) <= width else sentence[: width - 3].rstrip() + "..."


def cmd_algos(args: argparse.Namespace) -> int:
    from trainer import registry
    from trainer.core.config import describe

    if args.algorithm:
        learner = registry.get(args.algorithm)
        print((sys.modules[learner.__module__].__doc__ or "").strip())
        print(f"\naction spaces: {', '.join(learner.action_spaces)}")
        print("hyperparameters (override with -p name=value):")
        for field in describe(learner.config_class):
            print(f"  {field.name} ({field.type_name}, default {field.default!r})")
            if field.doc:
                print(f"      {field.doc}")
        return 0
    for learner in registry.learners():
        switches = [f.name for f in describe(learner.config_class) if f.type_name == "bool"]
        print(f"{learner.algorithm:16s} {_summary(sys.modules[learner.__module__].__doc__)}")
        print(f"{'':16s} actions: {', '.join(learner.action_spaces)}", end="")
        print(f"; options: {', '.join(switches)}" if switches else "")
    return 0


def _require(module: str, extra: str, what: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(
            f"{what} needs {module}: pip install 'agentserve[{extra}]' (the dev install and "
            "the make targets include it)"
        ) from None


def _benchmark_command(args: argparse.Namespace) -> str:
    """The canonical command line of a benchmark run, stored with its results."""
    import shlex

    words = ["agentserve", "benchmark", args.part]
    if args.only:
        words += ["--only", *args.only]
    if args.part == "reference":
        if args.seeds is not None:
            words += ["--seeds", *map(str, args.seeds)]
        if args.jobs > 1:
            words += ["--jobs", str(args.jobs)]
        if args.stop_at_bar is not None:
            words.append("--stop-at-bar" if args.stop_at_bar else "--no-stop-at-bar")
    else:
        words += ["--seeds", str(args.seeds)]
    if args.out != Path("docs"):
        words += ["--out", str(args.out)]
    return shlex.join(words)


def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.part is None:  # the bare form: the Stable-Baselines3 comparison
        args.part, args.only = "speed", []
        args.seeds = args.bare_seeds or 3
        args.out = args.bare_out or Path("docs")
    elif args.bare_seeds is not None or args.bare_out is not None:
        raise ConfigError(
            "give the options after the part: "
            f"agentserve benchmark {args.part} --seeds ... --out ..."
        )
    if args.part == "reference" and args.list:
        from trainer.reference import CHECKS, unavailable

        for check in CHECKS:
            reason = unavailable(check)
            print(check.label + ("" if reason is None else f"  (cannot run here: {reason})"))
        return 0
    _require("matplotlib", "bench", "the benchmark report")
    from trainer import report

    status = 0
    if args.part == "reference":
        from trainer.reference import run_benchmark, select

        passed = run_benchmark(
            select(args.only),
            args.out,
            seeds=args.seeds,
            jobs=args.jobs,
            stop_at_bar=args.stop_at_bar,
            command=_benchmark_command(args),
        )
        status = 0 if passed else 1
    elif args.part == "speed":
        _require("stable_baselines3", "sb3", "the comparison with Stable-Baselines3")
        from trainer.speed import run_benchmark as run_speed
        from trainer.speed import select as select_cases

        run_speed(select_cases(args.only), range(args.seeds), args.out, _benchmark_command(args))
    page = report.render(args.out)
    print(f"wrote {page}")
    return status


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _bench_page(args: argparse.Namespace) -> Path:
    """`bench --report-only`: the page of the benchmark asked for, from its stored results."""
    from agentserve.bench import breakdown, gpu_report, report
    from agentserve.bench.runner import load_results

    if args.breakdown:
        return breakdown.write(args.out, breakdown.load_results(args.out))
    if args.gpu:
        return gpu_report.write(args.out, gpu_report.load_results(args.out))
    return report.write(args.out, load_results(args.out))


def cmd_bench(args: argparse.Namespace) -> int:
    from agentserve.bench.runner import Settings, command_line, run_benchmark

    if args.breakdown and args.gpu:
        raise ConfigError("--breakdown and --gpu are two benchmarks: run them one at a time")
    if args.threads is not None and not args.gpu:
        raise ConfigError("--threads sets the CPU runtimes' threads of --gpu: add --gpu")
    if args.only and (args.breakdown or args.gpu):
        mode = "--breakdown" if args.breakdown else "--gpu"
        raise ConfigError(f"{mode} measures its own scenarios: leave out --only")
    if args.report_only:
        print(f"wrote {_bench_page(args)}")
        return 0
    if args.breakdown:
        from agentserve.bench.breakdown import SCENARIOS, run_breakdown

        settings = Settings(
            seconds=args.seconds, warmup=args.warmup, repeats=args.repeats, only=SCENARIOS
        )
        run_breakdown(settings, args.out, command_line(settings, args.out, mode="breakdown"))
        return 0
    if args.gpu:
        from agentserve.bench import gpu

        device = gpu.require_cuda()
        settings = Settings(
            seconds=args.seconds, warmup=args.warmup, repeats=args.repeats, only=gpu.BASE_SCENARIOS
        )
        command = gpu.command(settings, args.out, args.threads)
        gpu.run_gpu(settings, args.out, command, device=device, threads=args.threads)
        return 0
    settings = Settings(
        seconds=args.seconds, warmup=args.warmup, repeats=args.repeats, only=tuple(args.only)
    )
    run_benchmark(settings, args.out, command_line(settings, args.out))
    return 0


def _add_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        action="extend",
        nargs="+",
        default=[],
        metavar="TEXT",
        help="only the rows whose label contains TEXT (case-insensitive; repeatable)",
    )


def _add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs"),
        help="docs folder: results/ and benchmarks.md (default: docs)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentserve", description="Train RL agents offline and serve them live over gRPC."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train an algorithm on a Gymnasium env and export it")
    p.add_argument("--algo", required=True, help="registered algorithm (see `agentserve algos`)")
    p.add_argument("--env", required=True, help="Gymnasium env id, e.g. CartPole-v1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timesteps", type=_non_negative, help="env steps (default: the preset's)")
    p.add_argument("--out", type=Path, help="model repository to export the policy into")
    p.add_argument("--name", help="policy name in the repository (default: <env>-<algo>)")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyperparameter (repeatable), e.g. -p learning_rate=1e-3",
    )
    p.add_argument("--run-dir", type=Path, help="logs and checkpoints (default: runs/...)")
    p.add_argument(
        "--eval-freq", type=_non_negative, default=10_000, help="steps between evaluations"
    )
    p.add_argument("--eval-episodes", type=_non_negative, default=10)
    p.add_argument("--resume", type=Path, help="continue from a checkpoint .safetensors file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--ignore-env-mask",
        action="store_true",
        help="train and evaluate as if the env reported no action masks",
    )
    p.add_argument(
        "--safety",
        type=Path,
        help="YAML/JSON safety rules to carry in the exported manifest (docs/safety.md)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="run deterministic episodes of an exported policy")
    p.add_argument("path", nargs="?", type=Path, help="artifact folder <repo>/<name>[/<version>]")
    p.add_argument("--model-repo", type=Path, help="repository to find --policy in")
    p.add_argument("--policy", help="policy name")
    p.add_argument("--version", type=_non_negative, default=0, help="0 = the highest")
    p.add_argument("--env", help="env id (default: the one it was trained on)")
    p.add_argument("--episodes", type=_positive, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runtime", choices=["onnx", "table", "torch"], help="force a runtime")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "evaluate-log",
        help="estimate a policy's value from decision logs (off-policy evaluation: IPS, SNIPS)",
    )
    p.add_argument(
        "--log",
        type=Path,
        nargs="+",
        required=True,
        metavar="PATH",
        help="decision-log files, or directories of decisions-<n>.jsonl files",
    )
    p.add_argument(
        "--policy",
        type=Path,
        required=True,
        metavar="ARTIFACT_DIR",
        help="the target policy: a version folder <repo>/<name>/<version>, or <repo>/<name>",
    )
    p.add_argument(
        "--gamma", type=float, default=1.0, help="discount of multi-step episodes' returns (1.0)"
    )
    p.set_defaults(func=cmd_evaluate_log)

    p = sub.add_parser("serve", help="serve a model repository over gRPC")
    p.add_argument("--model-repo", type=Path, help="default: the bundled repository")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=_non_negative, default=50051, help="gRPC port (0 = any free)")
    p.add_argument(
        "--metrics-port", type=int, default=9100, help="Prometheus port (0 = any, -1 = off)"
    )
    p.add_argument("--grace", type=float, default=10.0, help="seconds to drain on SIGTERM")
    p.add_argument("--runtime", choices=["onnx", "table", "torch"], help="force a runtime")
    p.add_argument(
        "--device",
        default="cpu",
        help="where the torch runtime runs: cpu (default), cuda or cuda:N",
    )
    p.add_argument(
        "--runtime-threads",
        type=_positive,
        metavar="N",
        help="CPU threads of one inference: onnxruntime's intra-op threads and torch's thread "
        "count (default: 1 for onnxruntime, torch's own default)",
    )
    p.add_argument("--ready-file", type=Path, help="write pid and ports here once serving")
    p.add_argument(
        "--safety-config",
        type=Path,
        help="YAML/JSON of per-policy safety rules, on top of the manifests' (docs/safety.md)",
    )
    p.add_argument("--max-batch", type=_positive, default=64, help="most requests per runtime call")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=1.0,
        help="under concurrent load, wait this long for more requests once the queue is drained "
        "(a lone request never waits; 0: never wait)",
    )
    p.add_argument(
        "--max-queue",
        type=_positive,
        default=1024,
        help="queued requests per policy version before RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--max-connection-age",
        type=float,
        default=300.0,
        help="seconds before clients are asked to reconnect (spreads load over new replicas)",
    )
    p.add_argument(
        "--watch-interval",
        type=float,
        default=2.0,
        help="seconds between scans of the model repository for new versions (0 = off)",
    )
    p.add_argument(
        "--pins",
        type=Path,
        help="YAML/JSON {policy: version} serving defaults, re-read on change (rollback = pin)",
    )
    p.add_argument(
        "--online",
        action="append",
        default=[],
        metavar="NAME",
        help="let policy NAME learn online from Feedback/Update (repeatable)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="online learner state (write-ahead log, snapshots); default MODEL_REPO/.state",
    )
    p.add_argument(
        "--snapshot-every",
        type=_positive,
        default=1000,
        help="online updates between snapshots (each publishes a new version)",
    )
    p.add_argument(
        "--decision-log",
        type=Path,
        metavar="DIR",
        help="append each online decision that a feedback completes to "
        "DIR/<policy>/decisions-<n>.jsonl (for analysis and `agentserve evaluate-log`)",
    )
    p.add_argument(
        "--admin-port",
        type=_non_negative,
        help="serve the admin service (load/unload/pin/checkpoint) on this port of its own "
        "(0 = any free); default: no admin service. Needs --admin-token-file",
    )
    p.add_argument(
        "--admin-host",
        default="127.0.0.1",
        help="address the admin port listens on (default 127.0.0.1: loopback only)",
    )
    p.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help="bearer token every admin call must send (authorization: Bearer <token>)",
    )
    p.add_argument(
        "--feedback-token-file",
        type=Path,
        metavar="FILE",
        help="bearer token that Feedback, FeedbackStream and Update must send (Act stays open)",
    )
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="TLS certificate (chain) file")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="TLS private key file")
    p.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="require client certificates signed by this CA (mutual TLS)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("simulate", help="step a local env with actions served remotely")
    p.add_argument("--env", required=True, help="Gymnasium env id")
    p.add_argument("--policy", required=True, help="served policy name")
    p.add_argument("--episodes", type=_positive, default=10)
    p.add_argument("--target", default="127.0.0.1:50051", help="host:port of the server")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stochastic", action="store_true", help="sample instead of greedy actions")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "health", help="check a server's gRPC health: exit 0 when SERVING, 1 otherwise"
    )
    p.add_argument("--target", default="127.0.0.1:50051", help="host:port of the server")
    p.add_argument(
        "--service",
        default="",
        help="service to check (default: the server as a whole; e.g. agentserve.v1.AgentService)",
    )
    p.add_argument(
        "--timeout", type=_positive_seconds, default=5.0, help="seconds to wait for an answer (5)"
    )
    p.add_argument("--tls-ca", type=Path, metavar="PEM", help="TLS: the server certificate's CA")
    p.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="mutual TLS: the client certificate"
    )
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="mutual TLS: the client key")
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("demo", help="serve the bundled policies and drive them with the simulator")
    p.add_argument("--model-repo", type=Path, help="default: the bundled repository")
    p.add_argument("--episodes", type=_positive, default=5)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "benchmark",
        help="reference returns, speed against Stable-Baselines3, docs/benchmarks.md",
        description="Each part stores its results under OUT/results/ and re-renders "
        "OUT/benchmarks.md. Without a part: the speed comparison (`benchmark --seeds N`).",
    )
    p.add_argument(
        "--seeds",
        type=_positive,
        dest="bare_seeds",
        metavar="N",
        help="without a part: `speed --seeds N`",
    )
    p.add_argument(
        "--out", type=Path, dest="bare_out", metavar="DIR", help="without a part: `speed --out DIR`"
    )
    p.set_defaults(func=cmd_benchmark)
    parts = p.add_subparsers(dest="part", metavar="PART")
    q = parts.add_parser("reference", help="run reference rows, merge into results/reference.json")
    _add_only(q)
    q.add_argument(
        "--seeds", type=int, nargs="+", metavar="SEED", help="seeds (default: each row's, 0 1 2)"
    )
    q.add_argument(
        "--jobs", type=_positive, default=1, metavar="N", help="runs at once, one process each"
    )
    q.add_argument(
        "--stop-at-bar",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="end each run at the first evaluation that reaches the bar "
        "(default: per row, on for the long Box2D rows)",
    )
    q.add_argument("--list", action="store_true", help="print the rows and exit")
    _add_out(q)
    q = parts.add_parser(
        "speed", help="compare with Stable-Baselines3, merge into results/speed.json"
    )
    _add_only(q)
    q.add_argument("--seeds", type=_positive, default=3, help="seeds 0 .. N-1 (default 3)")
    _add_out(q)
    q = parts.add_parser("report", help="render benchmarks.md from the stored results only")
    _add_out(q)

    p = sub.add_parser(
        "bench",
        help="serving benchmark: our server against a bare gRPC echo server",
        description="Measures unary Act, ActStream and ActBatch against our server and a bare "
        "echo server of the same service, alternating between them, and a hot reload under "
        "streaming load against our server alone, and writes OUT/serving-benchmark.md and "
        "OUT/results/serving.json.",
    )
    p.add_argument(
        "--seconds", type=_positive_seconds, default=5.0, help="measured seconds per run (5)"
    )
    p.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of load before each measurement (1)"
    )
    p.add_argument("--repeats", type=_positive, default=3, help="runs per scenario and server (3)")
    p.add_argument(
        "--only",
        action="extend",
        nargs="+",
        default=[],
        metavar="SCENARIO",
        help="only these scenarios: act-c1 act-c32 stream-s1 stream-s32 batch64-c1 batch64-c4 "
        "reload-s32",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("docs"),
        help="docs folder: serving-benchmark.md and results/serving.json (default: docs)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="re-render the page from the stored results, measure nothing",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="instead: where the latency of one Act call goes, stage by stage, against the echo "
        "server (OUT/serving-breakdown.md)",
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help="instead: the torch CUDA runtime against the CPU runtimes, ActBatch of 4,096 "
        "through the server and batches of 1 to 4,096 inside one process (needs CUDA; "
        "OUT/serving-gpu.md)",
    )
    p.add_argument(
        "--threads",
        type=_positive,
        nargs="+",
        metavar="N",
        help="--gpu: the CPU runtimes' thread counts besides 1 (default: half the usable CPUs "
        "and all of them)",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("algos", help="list the registered algorithms and their options")
    p.add_argument("algorithm", nargs="?", help="show one algorithm's hyperparameters")
    p.set_defaults(func=cmd_algos)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except AgentserveError as error:
        print(f"agentserve {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
