"""Shared fixtures: the bundled model repository and a real server on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentserve import Client
from agentserve.local_server import LocalServer
from service.server import default_model_repo


@pytest.fixture(scope="session")
def bundled_repo() -> Path:
    return default_model_repo()


@pytest.fixture(scope="session")
def server(bundled_repo: Path) -> Iterator[LocalServer]:
    """`agentserve serve` on the bundled repository, in its own process, on port 0."""
    with LocalServer(bundled_repo) as running:
        yield running


@pytest.fixture
def client(server: LocalServer) -> Iterator[Client]:
    with Client(server.target) as connected:
        connected.wait_ready()
        yield connected
