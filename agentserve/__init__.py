"""agentserve: train reinforcement-learning agents offline and serve them live over gRPC.

This package is the torch-free contract that simulator authors install: the generated gRPC code
(`agentserve.v1`), the `Client`, and the policy-artifact manifest.
"""

from agentserve.client import ActResult, Client, PolicyDescription, RemoteError
from agentserve.errors import AgentserveError, ConfigError, ManifestError

__version__ = "0.1.0"

__all__ = [
    "ActResult",
    "AgentserveError",
    "Client",
    "ConfigError",
    "ManifestError",
    "PolicyDescription",
    "RemoteError",
    "__version__",
]
