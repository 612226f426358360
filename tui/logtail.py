"""Tail a log file by byte offset, the way Toolong does: rotation-safe, bad UTF-8 tolerated.

Reads the file directly (supervisor's tailProcessStdoutLog breaks on split UTF-8). Only
complete lines are returned; a partial last line waits for its newline, so a multi-byte
character split across two writes is decoded whole. When the path is rotated (a new
inode) or truncated, the rest of the old file is drained first, then the new file is read
from its start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["LogTail"]

READ_LIMIT = 256 * 1024  # bytes per call, so one poll never stalls on a huge file


class LogTail:
    """Incremental reader of one log file; `read_lines()` returns the lines added since."""

    def __init__(self, path: str | Path, *, initial_bytes: int = 16 * 1024) -> None:
        self.path = Path(path)
        self.initial_bytes = initial_bytes
        self._fh: BinaryIO | None = None
        self._inode: tuple[int, int] | None = None
        self._offset = 0
        self._pending = b""
        self._first_open = True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = None

    def _open(self) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - held open across reads, closed in close()
        except OSError:
            return False
        st = os.fstat(fh.fileno())
        self._fh, self._inode = fh, (st.st_dev, st.st_ino)
        self._pending = b""
        self._offset = 0
        if self._first_open and st.st_size > self.initial_bytes:
            # Start near the end; skip the partial first line.
            fh.seek(st.st_size - self.initial_bytes)
            fh.readline()
            self._offset = fh.tell()
        self._first_open = False
        return True

    def _drain(self) -> bytes:
        assert self._fh is not None
        self._fh.seek(self._offset)
        data = self._fh.read(READ_LIMIT)
        self._offset += len(data)
        return data

    def read_lines(self) -> list[str]:
        """The complete lines appended since the last call (decoded with errors="replace")."""
        chunks: list[bytes] = []
        if self._fh is None and not self._open():
            return []
        chunks.append(self._drain())
        try:
            st = os.stat(self.path)
            rotated = (st.st_dev, st.st_ino) != self._inode
            truncated = not rotated and st.st_size < self._offset
        except OSError:
            rotated, truncated = False, False  # moved away, not yet recreated: keep the old one
        if rotated or truncated:
            if rotated:
                chunks.append(self._drain())  # whatever was written before the rename
                tail = self._pending + b"".join(chunks)
                self.close()
                self._open()
                if self._fh is not None:
                    tail += b"\n" if tail and not tail.endswith(b"\n") else b""
                    tail += self._drain()
                self._pending = b""
                return self._split(tail)
            self._offset = 0
            self._pending = b""
            chunks = [self._drain()]
        return self._split(self._pending + b"".join(chunks))

    def _split(self, data: bytes) -> list[str]:
        if not data:
            self._pending = b""
            return []
        *complete, rest = data.split(b"\n")
        self._pending = rest
        return [line.rstrip(b"\r").decode("utf-8", errors="replace") for line in complete]
