"""Runs `agentserve serve` as a child process on free ports, for the demo, tests and benchmarks.

with LocalServer(model_repo) as server:
    client = Client(server.target)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agentserve.errors import AgentserveError


class ChildServer(ABC):
    """A server started as a child process (`command`) that writes a JSON ready file with its
    ports once it accepts calls; stopped by SIGTERM (SIGKILL after a timeout)."""

    name = "server"

    def __init__(self, host: str, start_timeout: float) -> None:
        self.host = host
        self.start_timeout = start_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="agentserve-")
        self.log_path = Path(self._tmp.name) / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.pid = 0

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @abstractmethod
    def command(self, ready_file: Path) -> list[str]:
        """The command line that starts the server and makes it write `ready_file`."""

    def on_ready(self, info: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Reads the ready file's fields beyond port and pid."""

    def start(self) -> Self:
        ready = Path(self._tmp.name) / "ready.json"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(ready), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.start_timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise AgentserveError(f"{self.name} exited during start-up:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AgentserveError(
                    f"{self.name} not ready after {self.start_timeout:g} s:\n{self.log()}"
                )
            time.sleep(0.05)
        info = json.loads(ready.read_text(encoding="utf-8"))
        self.port, self.pid = int(info["port"]), int(info["pid"])
        self.on_ready(info)
        return self

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL after `timeout`)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.returncode)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.terminate()
        self._tmp.cleanup()


class LocalServer(ChildServer):
    """`agentserve serve` on free ports."""

    def __init__(
        self,
        model_repo: Path | None = None,
        *,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 120.0,
    ) -> None:
        super().__init__(host, start_timeout)
        self.model_repo = model_repo
        self.extra_args = extra_args
        self.metrics_port = 0
        self.admin_port = 0
        """The admin service's port (when started with --admin-port), else 0."""

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, ready_file: Path) -> list[str]:
        command = [sys.executable, "-m", "agentserve.cli", "serve", "--host", self.host]
        command += ["--port", "0", "--metrics-port", "0", "--ready-file", str(ready_file)]
        if self.model_repo is not None:
            command += ["--model-repo", str(self.model_repo)]
        return command + list(self.extra_args)

    def on_ready(self, info: dict[str, Any]) -> None:
        self.metrics_port = int(info["metrics_port"])
        self.admin_port = int(info.get("admin_port", 0))
