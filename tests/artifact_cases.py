"""Artifacts for tests that need more than the bundled repository: another version of a policy
published the way exports are, and untrained exports to learn online from."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from agentserve.manifest import MANIFEST_FILE, ONNX_FILE
from trainer.loop import RunOptions, train


def publish_copy(repo: Path, name: str, version: int, *, broken: bool = False) -> Path:
    """A copy of `name`'s version 1 as `version`, written as exports are (a hidden folder, then
    a rename); `broken`: with an ONNX file that does not load (its digest no longer matches)."""
    hidden = repo / name / f".tmp-{version}"
    shutil.copytree(repo / name / "1", hidden)
    manifest = json.loads((hidden / MANIFEST_FILE).read_text())
    manifest["version"] = version
    (hidden / MANIFEST_FILE).write_text(json.dumps(manifest))
    if broken:
        (hidden / ONNX_FILE).write_bytes(b"not a model")
    target = repo / name / str(version)
    hidden.rename(target)
    return target


def untrained_policy(
    repo: Path, algorithm: str, env_id: str, *overrides: str, name: str = ""
) -> str:
    """Exports an untrained policy into `repo` (`agentserve train --timesteps 0`) to be learned
    online; returns its name (`name`, or the default one for the env and algorithm)."""
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(
            RunOptions(
                algorithm=algorithm,
                env_id=env_id,
                timesteps=0,
                out_repo=repo,
                run_dir=Path(run_dir),
                eval_episodes=0,
                progress=False,
                overrides=overrides,
                name=name or None,
            )
        )
    assert result.artifact is not None
    return result.artifact.parent.name
