"""A write-ahead log: numbered records, each made durable before it is acknowledged.

Record layout: little-endian u32 payload length, u32 CRC-32 of (sequence + payload), u64
sequence number, then the payload. Segments are files `wal-<first sequence>.log`. When a
snapshot is requested the log rolls to a new segment (`roll`); once the snapshot is durable (the
learner thread writes it while appends go on) the segments it wholly covers are deleted
(`drop_through`). Replay yields records in order and stops at the first torn or corrupt record
(a crash in the middle of a write), which it cuts off so appends continue from a clean end.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentserve.errors import ConfigError

HEADER = struct.Struct("<IIQ")
MAX_RECORD = 16 * 1024 * 1024


def _crc(sequence: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<Q", sequence)))


def fsync_directory(path: Path) -> None:
    """Makes a rename or a new file in `path` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class WriteAheadLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.last_sequence = 0
        self.bytes_written = 0
        self._file: Any = None
        self._path: Path | None = None
        self.synced = 0
        """Every record up to this sequence is on disk."""
        self._lock = threading.Lock()
        """Appends and rolls (the event loop) against deletions (the learner thread)."""

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("wal-*.log"))

    def replay(self, after: int) -> Iterator[tuple[int, bytes]]:
        """(sequence, payload) of every intact record with sequence > `after`, in order; a torn
        tail is truncated away. Call once, before appending."""
        for segment in self.segments():
            with segment.open("r+b") as handle:
                while True:
                    start = handle.tell()
                    header = handle.read(HEADER.size)
                    if not header:
                        break
                    intact = len(header) == HEADER.size
                    if intact:
                        length, checksum, sequence = HEADER.unpack(header)
                        payload = handle.read(length) if length <= MAX_RECORD else b""
                        intact = len(payload) == length and _crc(sequence, payload) == checksum
                        intact = intact and sequence > self.last_sequence
                    if not intact:
                        handle.truncate(start)  # a torn last record: keep what came before
                        os.fsync(handle.fileno())
                        break
                    self.last_sequence = sequence
                    if sequence > after:
                        yield sequence, payload
        self.last_sequence = max(self.last_sequence, after)
        self.synced = self.last_sequence  # read back from disk

    def append(self, payload: bytes) -> int:
        """Writes one record (not yet durable: call `sync` before acknowledging it)."""
        if len(payload) > MAX_RECORD:
            raise ConfigError(f"a write-ahead log record of {len(payload)} bytes is too large")
        with self._lock:
            if self._file is None:
                self._open_segment(self.last_sequence + 1)
            sequence = self.last_sequence + 1
            self._file.write(HEADER.pack(len(payload), _crc(sequence, payload), sequence) + payload)
            self.last_sequence = sequence
            self.bytes_written += HEADER.size + len(payload)
            return sequence

    def sync(self) -> int:
        """Everything appended before the call is on disk when this returns (group commit: one
        fsync covers every record written before it); returns the last sequence it covers. Safe
        to call from another thread while appends go on: the fsync runs outside the lock, on a
        duplicate of the descriptor (a segment closed meanwhile was synced by `roll`)."""
        with self._lock:
            covered = self.last_sequence
            if self._file is None:
                self.synced = max(self.synced, covered)
                return covered
            self._file.flush()
            descriptor = os.dup(self._file.fileno())
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        with self._lock:
            self.synced = max(self.synced, covered)
        return covered

    def roll(self) -> int:
        """Ends the current segment (synced); the next record starts a new one. Returns the
        last sequence written so far: a snapshot of the state up to it will cover the ended
        segments."""
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None
                self._path = None
            self.synced = self.last_sequence
            return self.last_sequence

    def drop_through(self, covered: int) -> None:
        """Deletes every segment whose records all have sequences <= `covered` (a durable
        snapshot holds their effect); the segment being appended to is kept. A crash before a
        deletion only leaves records that replay skips (they are not newer than the
        snapshot)."""
        with self._lock:
            segments = self.segments()
            firsts = [int(path.stem.removeprefix("wal-")) for path in segments]
            ends = [following - 1 for following in firsts[1:]] + [self.last_sequence]
            doomed = [
                path
                for path, end in zip(segments, ends, strict=True)
                if end <= covered and path != self._path
            ]
            for path in doomed:
                path.unlink()
            if doomed:
                fsync_directory(self.directory)

    def _open_segment(self, first: int) -> None:
        path = self.directory / f"wal-{first:020d}.log"
        self._file = path.open("ab")
        self._path = path
        fsync_directory(self.directory)

    def close(self) -> None:
        self.roll()
