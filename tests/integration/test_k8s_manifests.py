"""deploy/k8s: the kustomize base and overlays render, pass the Kubernetes API schemas
(kubernetes-validate --strict), and keep the properties the server relies on (gRPC probes, drain
time, hardening, one online writer, no admin port exposed).

Needs `kubectl` (for `kubectl kustomize`, offline); skipped without it. kubernetes-validate (the
dev extra) bundles the API schemas of every Kubernetes version it supports, so it runs offline.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentserve.cli import build_parser
from service.metrics import Metrics
from service.repository import PolicyRepository
from service.safety_config import load_safety_config
from service.server import SERVICE_NAME
from trainer import registry

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VARIANTS = ("base", "overlays/gpu", "overlays/online")
EXAMPLES = sorted((K8S / "examples").glob("*.yaml"))

# The oldest version these manifests target (native preStop `sleep` is on by default from 1.30)
# and the newest the installed kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30.0", "newest")

# Custom resources: kubernetes-validate only has the schemas of Kubernetes' own APIs (from its
# OpenAPI documents), not those of CRDs such as the Prometheus Operator's. These kinds are
# validated if the tool ever has their schema and skipped (with the reason) while it does not;
# any other kind without a schema fails. The ServiceMonitor's content is checked below instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

GRPC_PORT = 50051
METRICS_PORT = 9100
ADMIN_PORT = 50052  # the (planned) admin service: loopback only, never exposed

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed (needed for `kubectl kustomize`)")
    return path


_rendered: dict[str, list[Doc]] = {}


def render(kubectl: str, variant: str) -> list[Doc]:
    if variant not in _rendered:
        out = subprocess.run(
            [kubectl, "kustomize", str(K8S / variant)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        _rendered[variant] = [doc for doc in yaml.safe_load_all(out) if doc]
    return copy.deepcopy(_rendered[variant])


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(kubectl: str, variant: str) -> list[Doc]:
    return render(kubectl, variant)


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return found


def workloads(docs: list[Doc]) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet")]


def main_container(workload: Doc) -> Doc:
    (container,) = [
        c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "agentserve"
    ]
    return container


def serve_args(container: Doc) -> argparse.Namespace:
    """The container's flags, parsed by `agentserve serve`'s own parser: a flag it does not know,
    or a value it refuses, fails here rather than in a crash-looping pod."""
    assert container["command"] == ["agentserve", "serve"]
    args = container["args"]
    assert all(arg.startswith("--") and "=" in arg for arg in args), "write flags as --flag=value"
    namespace, unknown = build_parser().parse_known_args(["serve", *args])
    assert not unknown, f"flags `agentserve serve` does not know: {unknown}"
    return namespace


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(workload: Doc) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def volume_for(workload: Doc, container: Doc, path: str) -> tuple[Doc, Doc]:
    """(volumeMount, volume) of the mount that holds `path`."""
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"{path} is not on a mounted volume"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    spec = workload["spec"]
    volumes = spec["template"]["spec"].get("volumes", []) + [
        {"name": t["metadata"]["name"], "volumeClaimTemplate": t}
        for t in spec.get("volumeClaimTemplates", [])
    ]
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    return mount, volume


# --- Schema validation -----------------------------------------------------------------------


def kubernetes_version(name: str) -> str:
    from kubernetes_validate import utils

    return str(utils.latest_version()) if name == "newest" else name


def validate_all(documents: list[Doc], version: str) -> tuple[int, list[str], list[str]]:
    """(validated count, errors, skipped CRD documents)."""
    from kubernetes_validate import utils

    validated, errors, skipped = 0, [], []
    for doc in documents:
        label = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            used = utils.validate(doc, version, strict=True)
            # The schemas of the version asked for, not an older fallback.
            assert used == utils.major_minor(version), (used, version)
            validated += 1
        except utils.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{label}: {path}: {error.message}")
        except utils.SchemaNotFoundError:
            if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
                skipped.append(label)
            else:
                errors.append(f"{label}: no schema for {doc['apiVersion']} in {version}")
    return validated, errors, skipped


@pytest.mark.parametrize("k8s", KUBERNETES_VERSIONS)
def test_rendered_documents_pass_the_api_schemas(docs: list[Doc], k8s: str) -> None:
    version = kubernetes_version(k8s)
    validated, errors, skipped = validate_all(docs, version)
    assert not errors, f"Kubernetes {version}:\n" + "\n".join(errors)
    assert validated >= len(docs) - len(skipped) > 0
    # Only the whitelisted CRDs may go unvalidated (today: the ServiceMonitor).
    assert {s.split("/")[0] for s in skipped} <= {kind for _, kind in CRD_KINDS}


@pytest.mark.parametrize("k8s", KUBERNETES_VERSIONS)
def test_examples_pass_the_api_schemas(k8s: str) -> None:
    assert EXAMPLES
    for path in EXAMPLES:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        _, errors, skipped = validate_all(documents, kubernetes_version(k8s))
        assert not errors and not skipped, (path, errors, skipped)


@pytest.mark.parametrize("k8s", KUBERNETES_VERSIONS)
def test_strict_validation_rejects_unknown_fields(kubectl: str, k8s: str) -> None:
    """A control: the validator does reject a misspelt field deep in a pod template."""
    deployment = one(render(kubectl, "base"), "Deployment", "agentserve")
    main_container(deployment)["readinessProbe"]["grpc"]["portName"] = "grpc"
    _, errors, _ = validate_all([deployment], kubernetes_version(k8s))
    assert len(errors) == 1 and "portName" in errors[0]


# --- The workloads ---------------------------------------------------------------------------


def test_probes_are_grpc_health_checks_on_the_grpc_port(docs: list[Doc]) -> None:
    assert SERVICE_NAME == "agentserve.v1.AgentService"
    for workload in workloads(docs):
        container = main_container(workload)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
        namespace = serve_args(container)
        assert (namespace.host, namespace.port, namespace.metrics_port) == (
            "0.0.0.0",
            GRPC_PORT,
            METRICS_PORT,
        )
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container[probe]
            assert set(spec) & {"httpGet", "tcpSocket", "exec"} == set(), probe
            assert spec["grpc"]["port"] == ports["grpc"], probe
        assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
        assert container["livenessProbe"]["grpc"]["service"] == ""


def test_pods_are_hardened(docs: list[Doc]) -> None:
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True
        assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}
            assert "hostPort" not in str(container.get("ports", []))
        container = main_container(workload)
        _, tmp = volume_for(workload, container, "/tmp")
        assert "emptyDir" in tmp


def test_thread_pools_follow_the_cpu_limit(docs: list[Doc]) -> None:
    for workload in workloads(docs):
        container = main_container(workload)
        resources = container["resources"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[part]), part
        env = {e["name"]: e for e in container["env"]}
        for variable in THREAD_VARIABLES:
            assert env[variable]["valueFrom"]["resourceFieldRef"] == {
                "containerName": container["name"],
                "resource": "limits.cpu",
                "divisor": "1",
            }


def test_rollouts_keep_capacity_and_drain_within_the_grace_period(docs: list[Doc]) -> None:
    (deployment,) = of_kind(docs, "Deployment")
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        container = main_container(workload)
        namespace = serve_args(container)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        drain = pre_stop.get("seconds", 0) + namespace.grace
        assert pod["terminationGracePeriodSeconds"] > drain + 5, workload["metadata"]["name"]


def test_config_is_mounted_and_loads_with_the_servers_loaders(
    docs: list[Doc], tmp_path: Path
) -> None:
    config_maps = {d["metadata"]["name"]: d for d in of_kind(docs, "ConfigMap")}
    for workload in workloads(docs):
        container = main_container(workload)
        namespace = serve_args(container)
        files = {}
        for option in ("safety_config", "pins"):
            path = getattr(namespace, option)
            assert path is not None, option
            mount, volume = volume_for(workload, container, str(path))
            assert mount.get("readOnly") is True and "subPath" not in mount
            data = config_maps[volume["configMap"]["name"]]["data"]
            files[option] = tmp_path / path.name
            files[option].write_text(data[path.name], encoding="utf-8")
        load_safety_config(files["safety_config"])
        PolicyRepository(tmp_path, Metrics(), pins_file=files["pins"])
        # The pins file is re-read by the running server: the watcher must be on.
        assert namespace.watch_interval > 0


def test_every_image_is_the_same_release(docs: list[Doc], variant: str) -> None:
    images = {
        container["image"]
        for workload in workloads(docs)
        for container in workload["spec"]["template"]["spec"]["containers"]
        + workload["spec"]["template"]["spec"].get("initContainers", [])
    }
    tag = "0.1.0-cuda" if variant == "overlays/gpu" else "0.1.0"
    assert images == {f"ghcr.io/agentserve/agentserve:{tag}"}


# --- Labels, selectors and the objects around the workloads -----------------------------------


def test_labels_and_selectors_are_consistent(docs: list[Doc]) -> None:
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        assert all(key in labels for key in LABELS), doc["metadata"]["name"]
        assert labels["app.kubernetes.io/name"] == "agentserve"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "agentserve"
    pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads(docs)}
    for workload in workloads(docs):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert matches(selector, pod_labels(workload))
        others = [labels for name, labels in pods.items() if name != workload["metadata"]["name"]]
        assert not any(matches(selector, labels) for labels in others), "selectors overlap"
    (deployment,) = of_kind(docs, "Deployment")
    service = one(docs, "Service", "agentserve")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "grpc": GRPC_PORT,
        "metrics": METRICS_PORT,
    }
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
    } in hpa["spec"]["metrics"]
    # The HPA owns the replica count.
    assert "replicas" not in deployment["spec"]


def test_servicemonitor_scrapes_the_metrics_port_of_every_service(docs: list[Doc]) -> None:
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = of_kind(docs, "Service")
    assert all(matches(selector, s["metadata"]["labels"]) for s in services)
    for service in services:
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def exposed_ports(docs: list[Doc]) -> Iterator[tuple[str, Any]]:
    for service in of_kind(docs, "Service"):
        for port in service["spec"]["ports"]:
            yield f"Service/{service['metadata']['name']}", port["port"]
            yield f"Service/{service['metadata']['name']}", port.get("targetPort")
            yield f"Service/{service['metadata']['name']}", port.get("name")
    for policy in of_kind(docs, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for port in rule.get("ports", []):
                yield f"NetworkPolicy/{policy['metadata']['name']}", port.get("port")
                yield f"NetworkPolicy/{policy['metadata']['name']}", port.get("endPort")
    for workload in workloads(docs):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for port in container.get("ports", []):
                yield f"{workload['kind']}/{workload['metadata']['name']}", port["containerPort"]
                yield f"{workload['kind']}/{workload['metadata']['name']}", port.get("name")


def test_the_admin_port_is_never_exposed(docs: list[Doc]) -> None:
    for where, port in exposed_ports(docs):
        assert port not in (ADMIN_PORT, str(ADMIN_PORT), "admin"), where
    # Port ranges in a NetworkPolicy must not cover it either.
    for policy in of_kind(docs, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if "endPort" in port:
                    assert not port["port"] <= ADMIN_PORT <= port["endPort"]


def test_networkpolicy_allows_simulators_and_monitoring_only(docs: list[Doc]) -> None:
    (policy,) = of_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    for workload in workloads(docs):
        assert matches(spec["podSelector"]["matchLabels"], pod_labels(workload))
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["egress"] == []
    rules = {tuple(p["port"] for p in rule["ports"]): rule["from"] for rule in spec["ingress"]}
    assert set(rules) == {(GRPC_PORT,), (METRICS_PORT,)}
    for peer in rules[(GRPC_PORT,)]:
        assert peer["podSelector"]["matchLabels"] == {"agentserve.io/role": "simulator"}
    assert rules[(METRICS_PORT,)] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    for rule in spec["ingress"]:
        assert all(p["protocol"] == "TCP" and "endPort" not in p for p in rule["ports"])
        assert all(peer.keys() <= {"podSelector", "namespaceSelector"} for peer in rule["from"])


# --- The overlays ----------------------------------------------------------------------------


def test_gpu_overlay_requests_a_gpu_on_gpu_nodes(kubectl: str) -> None:
    docs = render(kubectl, "overlays/gpu")
    (deployment,) = of_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = main_container(deployment)
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    namespace = serve_args(container)
    assert (namespace.runtime, namespace.device) == ("torch", "cuda")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    # The base serves on the CPU.
    base = serve_args(main_container(one(render(kubectl, "base"), "Deployment", "agentserve")))
    assert (base.runtime, base.device) == (None, "cpu")


def test_online_overlay_has_one_writer_and_read_only_readers(kubectl: str) -> None:
    docs = render(kubectl, "overlays/online")
    (writer,) = of_kind(docs, "StatefulSet")
    (reader,) = of_kind(docs, "Deployment")
    assert writer["spec"]["replicas"] == 1
    assert writer["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert not any(
        h["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
        for h in of_kind(docs, "HorizontalPodAutoscaler")
    )
    assert not matches(
        one(docs, "Service", "agentserve")["spec"]["selector"], pod_labels(writer)
    ), "the serving Service must not send traffic to the writer"
    assert one(docs, "Service", "agentserve-online")["spec"]["clusterIP"] == "None"
    assert writer["spec"]["serviceName"] == "agentserve-online"

    writer_container = main_container(writer)
    writer_args = serve_args(writer_container)
    reader_container = main_container(reader)
    reader_args = serve_args(reader_container)
    assert len(writer_args.online) == 1 and not reader_args.online
    assert writer_args.state_dir is not None
    mount, volume = volume_for(writer, writer_container, str(writer_args.state_dir))
    assert "volumeClaimTemplate" in volume and not mount.get("readOnly")
    assert volume["volumeClaimTemplate"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert reader_args.model_repo == writer_args.model_repo is not None
    models = str(reader_args.model_repo)
    reader_mount, reader_volume = volume_for(reader, reader_container, models)
    writer_mount, writer_volume = volume_for(writer, writer_container, models)
    claim = writer_volume["persistentVolumeClaim"]["claimName"]
    assert reader_volume["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    assert reader_mount["readOnly"] is True
    assert not writer_mount.get("readOnly") and not writer_volume["persistentVolumeClaim"].get(
        "readOnly"
    )
    assert one(docs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    assert reader_args.watch_interval > 0

    # The init container prepares the same repository (the same claim), for the same policy,
    # with a registered algorithm; its script at least compiles.
    (init,) = writer["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["MODEL_REPO"] == models
    assert env["ONLINE_POLICY"] == writer_args.online[0]
    assert env["ONLINE_ALGO"] in registry.names()
    assert init["command"][:2] == ["python", "-c"]
    compile(init["command"][2], "prepare-model-repository", "exec")
    assert volume_for(writer, init, models)[1] == writer_volume

    # The writer is the only pod that mounts the model repository writable.
    for workload in workloads(docs):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for m in container.get("volumeMounts", []):
                if m["mountPath"] == models and not m.get("readOnly"):
                    assert workload is writer
