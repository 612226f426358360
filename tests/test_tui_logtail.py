"""The console's log tail (tui/logtail.py): by offset, rotation-safe, invalid UTF-8 tolerated."""

from __future__ import annotations

import os
from pathlib import Path

from tui.logtail import LogTail


def test_reads_only_new_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "sync.out.log"
    tail = LogTail(path)
    assert tail.read_lines() == []  # not there yet
    path.write_bytes(b"one\ntwo\npart")
    assert tail.read_lines() == ["one", "two"]
    assert tail.read_lines() == []
    with path.open("ab") as fh:
        fh.write(b"ial\nthree\n")
    assert tail.read_lines() == ["partial", "three"]
    tail.close()


def test_utf8_split_across_writes_and_invalid_bytes(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes("Café ".encode()[:-2])  # "Caf" + first byte of "é"
    tail = LogTail(path)
    assert tail.read_lines() == []
    with path.open("ab") as fh:
        fh.write("Café ".encode()[-2:] + b"ok\nbad \xff\xfe bytes\n")
    assert tail.read_lines() == ["Café ok", "bad \ufffd\ufffd bytes"]
    tail.close()


def test_rotation_drains_old_file_then_follows_new(tmp_path: Path) -> None:
    path = tmp_path / "sync.out.log"
    path.write_bytes(b"a\n")
    tail = LogTail(path)
    assert tail.read_lines() == ["a"]
    with path.open("ab") as fh:
        fh.write(b"b\n")  # written just before supervisord rotates
    os.rename(path, tmp_path / "sync.out.log.1")
    path.write_bytes(b"c\n")
    assert tail.read_lines() == ["b", "c"]
    with path.open("ab") as fh:
        fh.write(b"d\n")
    assert tail.read_lines() == ["d"]
    tail.close()


def test_truncation_restarts_from_the_top(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"long line one\nlong line two\n")
    tail = LogTail(path)
    assert len(tail.read_lines()) == 2
    with path.open("r+b") as fh:
        fh.truncate(0)
        fh.write(b"x\n")
    assert tail.read_lines() == ["x"]
    tail.close()


def test_large_file_starts_near_the_end(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(100_000)))
    lines = LogTail(path, initial_bytes=1024).read_lines()
    assert lines[-1] == "line 99999" and 50 < len(lines) < 200
    assert all(line.startswith("line ") for line in lines)
