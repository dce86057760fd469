"""The hot-reload scenario's model repository: a private copy of the bundled one, into which new
versions of a policy are published the way exports publish them (a hidden folder, then an
atomic rename), while our server watches it.

    with ReloadRepository() as repo:
        LocalServer(repo.root, extra_args=("--watch-interval", "0.2"))
        repo.publish("cartpole-dqn")  # version latest + 1, a copy of version 1

The bundled repository itself is only read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from agentserve.errors import AgentserveError, ConfigError
from agentserve.manifest import MANIFEST_FILE

WATCH_INTERVAL_S = 0.2
"""`agentserve serve --watch-interval` of the reload scenario's server."""


def bundled_repository() -> Path:
    """The model repository shipped with the server (service/default_models)."""
    from service.server import default_model_repo

    return default_model_repo()


def versions(repo: Path, policy: str) -> list[int]:
    """The published versions of `policy` in `repo`, ascending (hidden folders left out)."""
    folder = repo / policy
    if not folder.is_dir():
        raise ConfigError(f"no policy {policy!r} in the model repository {repo}")
    return sorted(
        int(entry.name)
        for entry in folder.iterdir()
        if entry.is_dir() and entry.name.isdigit() and int(entry.name) >= 1
    )


def publish_version(repo: Path, policy: str, version: int, source: int = 1) -> Path:
    """Publishes a copy of `policy`'s version `source` as `version`, as exports do: copied into
    a hidden folder (which the server's scans skip), its manifest's version set, then renamed
    into place in one step. Returns the new version's folder."""
    folder = repo / policy
    origin, target = folder / str(source), folder / str(version)
    if not (origin / MANIFEST_FILE).is_file():
        raise ConfigError(f"no version {source} of {policy!r} to copy in {repo}")
    if version < 1:
        raise ConfigError(f"a policy version is >= 1, got {version}")
    if target.exists():
        raise AgentserveError(f"version {version} of {policy!r} exists already in {repo}")
    hidden = folder / f".publish-{version}"
    shutil.rmtree(hidden, ignore_errors=True)
    shutil.copytree(origin, hidden)
    manifest_path = hidden / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["version"] = version
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.rename(hidden, target)
    return target


class ReloadRepository:
    """A copy of the bundled model repository (or of `source`) in a temporary folder, removed
    on exit."""

    def __init__(self, source: Path | None = None) -> None:
        self.source = bundled_repository() if source is None else source
        if not self.source.is_dir():
            raise ConfigError(f"no model repository at {self.source}")
        self._tmp = tempfile.TemporaryDirectory(prefix="agentserve-bench-reload-")
        self.root = Path(self._tmp.name) / "models"
        shutil.copytree(self.source, self.root, ignore=shutil.ignore_patterns(".*"))

    def latest(self, policy: str) -> int:
        """The highest published version of `policy`."""
        found = versions(self.root, policy)
        if not found:
            raise ConfigError(f"policy {policy!r} has no version in {self.root}")
        return found[-1]

    def publish(self, policy: str) -> int:
        """Publishes version latest + 1 of `policy` (a copy of its first version); returns it."""
        version = self.latest(policy) + 1
        publish_version(self.root, policy, version, source=versions(self.root, policy)[0])
        return version

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
