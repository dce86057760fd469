"""The model repository: `<root>/<policy>/<version>/`, loaded safely into served policies.

Only folders inside the root are read (symlinks out of it are refused), names must be valid policy
names, versions positive integers, and every file must match the sha256 in its manifest. A version
that fails to load is reported (log + metric) and skipped; the others keep serving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentserve.errors import AgentserveError, ConfigError, ManifestError
from agentserve.manifest import check_policy_name, load_manifest
from service.errors import NotFound
from service.metrics import UNKNOWN_POLICY, Metrics
from service.policy import ServedPolicy

log = logging.getLogger("agentserve.repository")


@dataclass(frozen=True)
class LoadFailure:
    policy: str
    version: str
    reason: str


class PolicyRepository:
    def __init__(
        self,
        root: Path,
        metrics: Metrics,
        runtime: str | None = None,
        safety: dict[str, Any] | None = None,
    ) -> None:
        """`safety`: policy name -> safety section (service.safety_config), applied on top of
        each version's manifest rules."""
        self.root = root.resolve()
        if not self.root.is_dir():
            raise ConfigError(f"model repository {root} is not a folder")
        self.metrics = metrics
        self.runtime = runtime
        self.safety = dict(safety or {})
        self._policies: dict[str, dict[int, ServedPolicy]] = {}

    def load(self) -> list[LoadFailure]:
        """Loads every policy version under the root; returns what failed."""
        failures: list[LoadFailure] = []
        for policy_dir in sorted(self.root.iterdir()):
            if policy_dir.name.startswith(".") or not policy_dir.is_dir():
                continue
            for version_dir in sorted(policy_dir.iterdir()):
                if version_dir.name.startswith("."):
                    continue  # exports in progress are written to hidden temp folders
                try:
                    self._load_version(policy_dir, version_dir)
                except (AgentserveError, OSError) as error:
                    failures.append(LoadFailure(policy_dir.name, version_dir.name, str(error)))
        for name in sorted(set(self.safety) - set(self._policies)):
            log.warning("safety config names policy %r, which the repository does not have", name)
        for failure in failures:
            label = failure.policy if failure.policy in self._policies else UNKNOWN_POLICY
            self.metrics.load_failures.labels(label).inc()
            log.error(
                "policy %s/%s not loaded: %s", failure.policy, failure.version, failure.reason
            )
        return failures

    def _load_version(self, policy_dir: Path, version_dir: Path) -> None:
        check_policy_name(policy_dir.name)
        if not version_dir.name.isdigit() or int(version_dir.name) < 1:
            raise ManifestError(f"version folder {version_dir.name!r} is not a positive integer")
        if not version_dir.resolve().is_relative_to(self.root):
            raise ManifestError("version folder resolves outside the model repository")
        artifact = load_manifest(version_dir)
        policy = ServedPolicy(artifact, self.runtime, self.safety.get(artifact.manifest.name))
        versions = self._policies.setdefault(policy.name, {})
        versions[policy.version] = policy
        manifest = policy.manifest
        self.metrics.policy_loaded.labels(
            policy.name, str(policy.version), manifest.algorithm, policy.runtime.name
        ).set(1)
        self.metrics.default_version.labels(policy.name).set(max(versions))
        log.info(
            "loaded %s/%s (%s, runtime %s, %d safety rules)",
            policy.name,
            policy.version,
            manifest.algorithm,
            policy.runtime.name,
            len(policy.safety.rule_names),
        )

    def names(self) -> list[str]:
        return sorted(self._policies)

    def versions(self, name: str) -> list[int]:
        return sorted(self._policies.get(name, {}))

    def get(self, name: str, version: int = 0) -> ServedPolicy:
        versions = self._policies.get(name)
        if not versions:
            raise NotFound(f"no policy named {name!r}")
        if version == 0:
            return versions[max(versions)]
        try:
            return versions[version]
        except KeyError:
            known = ", ".join(map(str, sorted(versions)))
            raise NotFound(f"policy {name!r} has no version {version} (has {known})") from None

    def metric_label(self, name: str) -> str:
        """A bounded label: the name of a loaded policy, else `_unknown`."""
        return name if name in self._policies else UNKNOWN_POLICY
