"""Stored benchmark results: one JSON file per benchmark part under `<docs>/results/`.

`docs/benchmarks.md` is rendered from these files only (`trainer/report.py`), so every number in
it was measured by a command and written here, never typed in.

Parts that take hours (the reference rows, the SB3 comparison) are kept piecewise:

    {"schema": 1, "part": "reference", "entries": {"<row label>": {"<seed>": {...}}}}

`merge_entry` replaces exactly one (row, seed) entry and keeps all the others, so a row can be
rerun for one seed, or the rows spread over several sessions or machines. Quick parts (bandits,
cliff walking) replace their whole file with `write_json`. Every write goes to a temporary file in
the same folder and is renamed over the old file (atomic on POSIX: a reader sees the old or the
new file, never half of one); read-modify-write cycles hold an exclusive lock on the folder, so
parallel jobs and concurrent commands do not lose each other's entries.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentserve.errors import ConfigError

SCHEMA = 1
RESULTS_FOLDER = "results"

REFERENCE = "reference"
SPEED = "speed"
BANDITS = "bandits"
CLIFF_WALKING = "cliff-walking"

Entry = dict[str, Any]
Entries = dict[str, dict[str, Entry]]
"""row label -> seed (as a string) -> entry."""


def results_dir(docs: Path) -> Path:
    return docs / RESULTS_FOLDER


def part_path(docs: Path, part: str) -> Path:
    return results_dir(docs) / f"{part}.json"


def now() -> str:
    """UTC time of a measurement, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(libraries: tuple[str, ...] = ("torch", "gymnasium")) -> dict[str, Any]:
    """What a measurement ran on: CPU, core count, OS, Python and library versions."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    for name in libraries:
        module = sys.modules.get(name)
        if module is None:
            with contextlib.suppress(ImportError):
                module = __import__(name)
        info[name] = getattr(module, "__version__", "not installed")
    return info


def describe_machine(info: dict[str, Any]) -> str:
    """One line: "CPU, N cores, OS, Python x, torch y, ..."."""
    fixed = ("cpu", "cores", "system", "python")
    versions = "".join(f", {key} {value}" for key, value in info.items() if key not in fixed)
    return (
        f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores, {info.get('system', '?')}, "
        f"Python {info.get('python', '?')}{versions}"
    )


def read_json(path: Path) -> dict[str, Any] | None:
    """The stored object, or None if there is no file yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); fix or delete it") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ConfigError(f"{path}: expected a results object with schema {SCHEMA}")
    return data


def write_text(path: Path, text: str) -> None:
    """Writes `text` to `path` atomically: a temporary file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; results are shared files
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes `data` (with the schema number) to `path` atomically."""
    write_text(path, json.dumps({"schema": SCHEMA, **data}, indent=1) + "\n")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` (flock on the folder itself, so no lock file is left)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking, the rename still keeps each write whole
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def load_entries(path: Path) -> Entries:
    data = read_json(path)
    if data is None:
        return {}
    entries = data.get("entries", {})
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: 'entries' must be an object")
    return entries


def merge_entry(path: Path, part: str, label: str, seed: int | str, entry: Entry) -> None:
    """Stores `entry` as (label, seed), replacing only that entry; other rows and seeds stay."""
    with _locked(path.parent):
        entries = load_entries(path)
        seeds = entries.setdefault(label, {})
        seeds[str(seed)] = entry
        ordered = {
            key: dict(sorted(value.items(), key=_seed_order)) for key, value in entries.items()
        }
        write_json(path, {"part": part, "entries": ordered})


def _seed_order(item: tuple[str, Any]) -> tuple[int, str]:
    key = item[0]
    return (int(key), "") if key.lstrip("-").isdigit() else (sys.maxsize, key)


__all__ = [
    "BANDITS",
    "CLIFF_WALKING",
    "REFERENCE",
    "SPEED",
    "Entries",
    "Entry",
    "describe_machine",
    "load_entries",
    "machine_info",
    "merge_entry",
    "now",
    "part_path",
    "read_json",
    "results_dir",
    "write_json",
    "write_text",
]
