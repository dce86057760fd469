"""The service config (`agentserve serve --safety-config FILE`): per-policy settings kept outside
the artifacts — safety rules, so operators can forbid actions without re-exporting a policy, and
`online: true` to let a policy learn online (the same as `--online NAME`).

YAML or JSON::

    policies:
      cartpole-dqn:                 # applies to every version of the policy
        rules:
          - name: left-edge
            when: {feature: 0, op: "<", value: -2.0}
            forbid: [0]
        fallback_action: 1
      bernoullibandit-ucb1:
        online: true

Each policy's section (without `online`) has the form of a manifest's `safety` section
(agentserve.safety) and is applied on top of the manifest's own rules: an action must pass both,
and the config's fallback wins. The file's shape is checked when the server starts (a bad file
stops it); each section is validated against its policy's spaces when the policy loads (a bad
section stops that policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentserve.errors import ConfigError, ManifestError
from agentserve.manifest import check_policy_name
from agentserve.safety import load_safety_file


def load_safety_config(path: Path) -> dict[str, Any]:
    """Policy name -> its (not yet validated) safety section."""
    return load_service_config(path)[0]


def load_service_config(path: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(policy name -> its not yet validated safety section, the policies set `online: true`)."""
    data = load_safety_file(path)
    if not isinstance(data, dict) or set(data) != {"policies"}:
        raise ConfigError(f"safety config {path}: needs one top-level key, `policies`")
    policies = data["policies"]
    if not isinstance(policies, dict):
        raise ConfigError(f"safety config {path}: `policies` must map policy names to sections")
    for name, section in policies.items():
        try:
            check_policy_name(str(name))
        except ManifestError as error:
            raise ConfigError(f"safety config {path}: {error}") from None
        if not isinstance(section, dict):
            raise ConfigError(f"safety config {path}: the section of {name!r} must be a mapping")
        if not isinstance(section.get("online", False), bool):
            raise ConfigError(f"safety config {path}: `online` of {name!r} must be true or false")
    online = tuple(str(name) for name, section in policies.items() if section.get("online"))
    safety = {
        str(name): {k: v for k, v in section.items() if k != "online"}
        for name, section in policies.items()
    }
    return safety, online
