"""Read-only dataset folders for tests: permissions taken away, and a snapshot that shows any write.

Tests may run as root, for whom `chmod a-w` does not stop writes, so a test asserts that the
folder's snapshot is unchanged: every path with its type, size, content hash and modification
time (a folder's changes whenever an entry is created, renamed or removed, a temporary file
included).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path
from typing import Iterator


def snapshot(root: Path) -> dict[str, tuple]:
    """relative path -> ("dir", mtime_ns, sorted entries) or ("file", size, sha256, mtime_ns), for
    `root` and everything under it."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        name = str(path.relative_to(root))
        if stat.S_ISDIR(info.st_mode):
            found[name] = ("dir", info.st_mtime_ns, sorted(p.name for p in path.iterdir()))
        else:
            found[name] = ("file", info.st_size, hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mtime_ns)
    return found


@contextlib.contextmanager
def read_only(root: Path) -> Iterator[dict[str, tuple]]:
    """`chmod -R a-w root` for the duration (write permission restored after, so pytest can delete
    the folder); yields the snapshot taken once the permissions are gone."""
    paths = [root, *root.rglob("*")]
    modes = {p: p.lstat().st_mode for p in paths}
    for p in paths:
        os.chmod(p, stat.S_IMODE(modes[p]) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield snapshot(root)
    finally:
        for p in reversed(paths):
            os.chmod(p, stat.S_IMODE(modes[p]))
