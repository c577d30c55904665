"""Replacing a file in one step, so a crash leaves it old or new, never a mix.

`atomic_write` replaces one file. `Staged` replaces several that must change together (a
series' partitions and its manifest): every new file is written to a temp file first, and
only when all of them are on disk are they renamed into place. A write that fails (a full
disk, a read-only file system) then changes nothing and leaves no temp file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (POSIX; a no-op where folders cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: Path, mode: str = "wb", shared: bool = False) -> Iterator[IO[Any]]:
    """Yield a temp file in `path`'s folder; on success it is fsynced and replaces `path`.

    The temp file is created by mkstemp, so the result has mode 0600 (right for tokens and
    the cache); `shared=True` gives 0644 instead, for reports and exports meant to be passed on.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if shared:
            os.chmod(tmp, 0o644)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def write_temp(path: Path, data: bytes) -> Path:
    """`data` in a new fsynced temp file beside `path` (mode 0600); removed again on any error."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return Path(tmp)


class Staged:
    """Files of one folder replaced together: `put` each (written to a temp file), then
    `commit` (renames, in the order put, then removals, then one fsync of the folder), or
    `abort` (temp files removed). Renames keep inode, mtime and size, so the stat `put`
    returns is the stat of the file once committed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._temps: list[tuple[Path, Path]] = []

    def put(self, path: Path, data: bytes) -> os.stat_result:
        tmp = write_temp(path, data)
        self._temps.append((tmp, path))
        return os.stat(tmp)

    def commit(self, remove: list[Path] | tuple[Path, ...] = ()) -> None:
        for tmp, path in self._temps:
            os.replace(tmp, path)
        self._temps = []
        for path in remove:
            path.unlink(missing_ok=True)
        fsync_dir(self.folder)

    def abort(self) -> None:
        for tmp, _ in self._temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self._temps = []
