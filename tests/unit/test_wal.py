"""service.online.wal: records come back in order, a torn or corrupt tail is cut off cleanly,
appends continue after it, and a durable snapshot drops the segments it covers."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.online.wal import HEADER, WriteAheadLog


def written(directory: Path, payloads: list[bytes]) -> WriteAheadLog:
    log = WriteAheadLog(directory)
    assert list(log.replay(0)) == []
    for payload in payloads:
        log.append(payload)
    log.close()
    return log


def test_records_replay_in_order_after_a_position(tmp_path: Path) -> None:
    written(tmp_path, [b"a", b"bb", b"ccc"])
    log = WriteAheadLog(tmp_path)
    assert list(log.replay(0)) == [(1, b"a"), (2, b"bb"), (3, b"ccc")]
    assert WriteAheadLog(tmp_path).replay(2).__next__() == (3, b"ccc")


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size, HEADER.size + 2])
def test_a_torn_last_record_is_cut_and_appends_continue(tmp_path: Path, cut: int) -> None:
    written(tmp_path, [b"first", b"second-record"])
    (segment,) = WriteAheadLog(tmp_path).segments()
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - (len(b"second-record") + HEADER.size) + cut])
    log = WriteAheadLog(tmp_path)
    assert list(log.replay(0)) == [(1, b"first")]
    assert log.append(b"third") == 2
    log.close()
    assert list(WriteAheadLog(tmp_path).replay(0)) == [(1, b"first"), (2, b"third")]


def test_a_corrupt_record_ends_the_replay(tmp_path: Path) -> None:
    written(tmp_path, [b"one", b"two", b"three"])
    (segment,) = WriteAheadLog(tmp_path).segments()
    data = bytearray(segment.read_bytes())
    data[HEADER.size + 3 + HEADER.size] ^= 0xFF  # the payload of record 2
    segment.write_bytes(bytes(data))
    assert list(WriteAheadLog(tmp_path).replay(0)) == [(1, b"one")]


def test_segments_a_snapshot_covers_are_dropped_while_appends_go_on(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    list(log.replay(0))
    for payload in (b"a", b"b"):
        log.append(payload)
    covered = log.roll()  # a snapshot of the state after record 2 is requested
    assert covered == 2
    assert log.append(b"c") == 3  # appends go on while the snapshot is written
    log.drop_through(covered)  # ... and once it is durable, what it covers goes
    assert [p.name for p in log.segments()] == [f"wal-{3:020d}.log"]
    log.drop_through(3)  # the segment being appended to stays, even when covered
    assert len(log.segments()) == 1
    assert log.append(b"d") == 4
    log.close()
    assert list(WriteAheadLog(tmp_path).replay(2)) == [(3, b"c"), (4, b"d")]


def test_a_segment_is_kept_until_a_snapshot_covers_all_of_it(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    list(log.replay(0))
    for payload in (b"a", b"b", b"c"):
        log.append(payload)
    log.roll()
    log.drop_through(2)  # record 3 is not covered: its segment stays
    assert list(WriteAheadLog(tmp_path).replay(2)) == [(3, b"c")]
    log.drop_through(3)
    assert log.segments() == []
