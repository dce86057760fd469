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

import yaml

from agentserve.errors import AgentserveError, ConfigError, ManifestError
from agentserve.manifest import MANIFEST_FILE, check_policy_name, load_manifest
from service.errors import NotFound
from service.metrics import UNKNOWN_POLICY, Metrics
from service.policy import ServedPolicy
from service.runtime import resolve_device

log = logging.getLogger("agentserve.repository")


@dataclass(frozen=True)
class LoadFailure:
    policy: str
    version: str
    reason: str


@dataclass(frozen=True)
class Refresh:
    """What a scan of the repository found, loaded off the event loop; `apply` swaps it in."""

    loaded: tuple[ServedPolicy, ...]
    failures: tuple[tuple[LoadFailure, tuple[int, int]], ...]
    """(failure, fingerprint of the version's manifest when it failed)."""
    removed: tuple[tuple[str, int], ...]
    pins: dict[str, int] | None
    """New pins (the pins file changed), or None."""


class PolicyRepository:
    """Every loaded version of every policy. `load` reads the repository once; `refresh`
    (thread-safe: it only reads the current state) loads versions that appeared and notes those
    that disappeared, and `apply` (on the event loop) swaps the result in: readers see the old
    dict or the new one, never a half-updated one, and a call in flight keeps the policy object it
    started with. A version that fails to load is reported once per manifest change and skipped;
    the versions already serving go on serving."""

    def __init__(
        self,
        root: Path,
        metrics: Metrics,
        runtime: str | None = None,
        safety: dict[str, Any] | None = None,
        pins_file: Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        """`safety`: policy name -> safety section (service.safety_config), applied on top of
        each version's manifest rules. `pins_file`: YAML/JSON {policy: version} serving
        defaults, re-read when it changes (rollback = pin the previous version). `threads`: CPU
        threads of one inference (service.runtime `load_runtime`; None: the defaults)."""
        self.root = root.resolve()
        if not self.root.is_dir():
            raise ConfigError(f"model repository {root} is not a folder")
        self.metrics = metrics
        self.runtime = runtime
        self.device = resolve_device(device)  # "cuda" without a GPU stops the server at start
        self.threads = threads
        self.safety = dict(safety or {})
        self.pins_file = pins_file
        self.pins: dict[str, int] = {}
        self._pins_stamp: tuple[int, int] | None = None
        self._policies: dict[str, dict[int, ServedPolicy]] = {}
        self._failed: dict[Path, tuple[int, int]] = {}
        self.unloaded: set[tuple[str, int]] = set()
        """(policy, version) pairs an operator unloaded (service.admin): scans skip their folders
        until an operator loads them again."""
        if pins_file is not None:
            self.pins = self._read_pins()  # a bad pins file stops the server at start

    # --- Loading and reloading --------------------------------------------------------------

    def load(self) -> list[LoadFailure]:
        """Loads every policy version under the root; returns what failed."""
        failures = self.apply(self.refresh(), startup=True)
        for name in sorted(set(self.safety) - set(self._policies)):
            log.warning("safety config names policy %r, which the repository does not have", name)
        return failures

    def refresh(self) -> Refresh:
        """Scans the repository: loads (validates, warms) every version folder not served yet,
        lists served versions whose folder is gone, re-reads the pins file if it changed."""
        loaded: list[ServedPolicy] = []
        failures: list[tuple[LoadFailure, tuple[int, int]]] = []
        present: set[tuple[str, int]] = set()
        for policy_dir, version_dir in self._version_dirs():
            served = self._policies.get(policy_dir.name, {})
            if version_dir.name.isdigit() and int(version_dir.name) in served:
                present.add((policy_dir.name, int(version_dir.name)))
                continue
            if version_dir.name.isdigit() and (policy_dir.name, int(version_dir.name)) in (
                self.unloaded
            ):
                continue
            stamp = _stamp(version_dir / MANIFEST_FILE)
            if self._failed.get(version_dir) == stamp:
                continue  # failed before, unchanged since: reported once
            try:
                loaded.append(self._load_version(policy_dir, version_dir))
            except (AgentserveError, OSError) as error:
                failure = LoadFailure(policy_dir.name, version_dir.name, str(error))
                failures.append((failure, stamp))
        removed = tuple(
            (name, version)
            for name, versions in self._policies.items()
            for version in versions
            if (name, version) not in present
        )
        pins = None
        if self.pins_file is not None and _stamp(self.pins_file) != self._pins_stamp:
            try:
                pins = self._read_pins()
            except ConfigError as error:
                log.error("pins file not applied: %s", error)
        return Refresh(tuple(loaded), tuple(failures), removed, pins)

    def apply(self, refresh: Refresh, startup: bool = False) -> list[LoadFailure]:
        """Swaps a refresh in (call on the thread that serves requests); returns its failures."""
        policies = {name: dict(versions) for name, versions in self._policies.items()}
        for name, version in refresh.removed:
            policy = policies.get(name, {}).pop(version, None)
            if policy is None:  # already removed by an earlier refresh (an operator's, say)
                continue
            if not policies[name]:
                del policies[name]
            self.metrics.policy_loaded.remove(
                name, str(version), policy.manifest.algorithm, policy.runtime.name
            )
            self.metrics.unloads.labels(name).inc()
            reason = "by an operator" if (name, version) in self.unloaded else "its folder is gone"
            log.info("unloaded %s/%s (%s)", name, version, reason)
        for policy in refresh.loaded:
            if (policy.name, policy.version) in self.unloaded:  # unloaded while this scan ran
                continue
            policies.setdefault(policy.name, {})[policy.version] = policy
            manifest = policy.manifest
            self.metrics.policy_loaded.labels(
                policy.name, str(policy.version), manifest.algorithm, policy.runtime.name
            ).set(1)
            if not startup:
                self.metrics.reloads.labels(policy.name).inc()
            log.info(
                "%s %s/%s (%s, runtime %s, %d safety rules)",
                "loaded" if startup else "hot-loaded",
                policy.name,
                policy.version,
                manifest.algorithm,
                policy.runtime.name,
                len(policy.safety.rule_names),
            )
        if refresh.pins is not None:
            self.pins = refresh.pins
            log.info("pins now %s", refresh.pins or "none")
        self._policies = policies  # the swap: one assignment
        failures = []
        for failure, stamp in refresh.failures:
            self._failed[self.root / failure.policy / failure.version] = stamp
            label = failure.policy if failure.policy in policies else UNKNOWN_POLICY
            self.metrics.load_failures.labels(label).inc()
            log.error(
                "policy %s/%s not loaded: %s", failure.policy, failure.version, failure.reason
            )
            failures.append(failure)
        for name in policies:
            self.metrics.default_version.labels(name).set(self.get(name).version)
        return failures

    def _version_dirs(self) -> list[tuple[Path, Path]]:
        found = []
        for policy_dir in sorted(self.root.iterdir()):
            if policy_dir.name.startswith(".") or not policy_dir.is_dir():
                continue
            for version_dir in sorted(policy_dir.iterdir()):
                if not version_dir.name.startswith("."):  # exports in progress are hidden
                    found.append((policy_dir, version_dir))
        return found

    def _load_version(self, policy_dir: Path, version_dir: Path) -> ServedPolicy:
        check_policy_name(policy_dir.name)
        if not version_dir.name.isdigit() or int(version_dir.name) < 1:
            raise ManifestError(f"version folder {version_dir.name!r} is not a positive integer")
        if not version_dir.resolve().is_relative_to(self.root):
            raise ManifestError("version folder resolves outside the model repository")
        artifact = load_manifest(version_dir)
        return ServedPolicy(
            artifact,
            self.runtime,
            self.safety.get(artifact.manifest.name),
            device=self.device,
            threads=self.threads,
        )

    def _read_pins(self) -> dict[str, int]:
        assert self.pins_file is not None
        self._pins_stamp = _stamp(self.pins_file)
        try:
            data = yaml.safe_load(self.pins_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read pins file {self.pins_file}: {error}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for k, v in data.items()
        ):
            raise ConfigError(
                f"pins file {self.pins_file} must map policy names to positive version integers"
            )
        return dict(data)

    # --- Lookup -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._policies)

    def versions(self, name: str) -> list[int]:
        return sorted(self._policies.get(name, {}))

    def get(self, name: str, version: int = 0) -> ServedPolicy:
        """`version` 0: the pinned version if it is loaded, else the highest."""
        versions = self._policies.get(name)
        if not versions:
            raise NotFound(f"no policy named {name!r}")
        if version == 0:
            pinned = self.pins.get(name)
            return versions[pinned if pinned in versions else max(versions)]
        try:
            return versions[version]
        except KeyError:
            known = ", ".join(map(str, sorted(versions)))
            raise NotFound(f"policy {name!r} has no version {version} (has {known})") from None

    def metric_label(self, name: str) -> str:
        """A bounded label: the name of a loaded policy, else `_unknown`."""
        return name if name in self._policies else UNKNOWN_POLICY


def _stamp(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) of a file; (0, 0) when it is missing."""
    try:
        status = path.stat()
    except OSError:
        return (0, 0)
    return (status.st_mtime_ns, status.st_size)
