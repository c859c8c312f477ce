"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash or Ctrl-C mid-write leaves either the old file or the new one, never a truncated one; a
failed write (disk full, quota, read-only filesystem) raises WriteError and keeps the old file.
Writes killed outright leave their temporary files behind, which clean_stale removes.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import IO, Iterator

from voxseg.errors import VoxsegError

_TOKEN = 8  # hex digits in a temporary file's name
# torch.save's zip writer reports a failed write as a RuntimeError naming one of these
_TORCH_WRITER = ("inline_container", "PytorchStreamWriter")


class WriteError(VoxsegError, OSError):
    """A file could not be written (its previous version, if any, is kept). Also an OSError."""


def _temp_name(name: str, token: str) -> str:
    """The temporary file name for target `name`: `.NAME.TOKEN.tmp`."""
    return f".{name}.{token}.tmp"


_STALE = re.compile(re.escape(_temp_name("NAME", "TOKEN"))
                    .replace("NAME", ".+").replace("TOKEN", f"[0-9a-f]{{{_TOKEN}}}"))


def _create_temp(path: Path) -> tuple[int, str]:
    """Create a new temporary file beside `path`. Mode 0o666 lets the umask (or a default ACL)
    give it, and so the target, the mode of any newly created file."""
    while True:
        tmp = str(path.with_name(_temp_name(path.name, secrets.token_hex(_TOKEN // 2))))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _failure(exc: BaseException, tmp: str) -> str | None:
    """Why writing to `tmp` failed, when `exc` is a failed write; None for any other exception."""
    if isinstance(exc, WriteError):  # a nested atomic write
        return None
    if isinstance(exc, OSError) and exc.filename in (None, tmp):  # not about some other file
        return exc.strerror or str(exc)
    if isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in _TORCH_WRITER):
        context = exc.__cause__ or exc.__context__
        if isinstance(context, OSError):
            return context.strerror or str(context)
        return str(exc).strip().splitlines()[0]
    return None


def _write_error(path: Path, reason: str) -> WriteError:
    kept = "the previous file is kept" if path.exists() else "nothing was written"
    return WriteError(f"{path}: could not write ({reason}); {kept}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces `path` atomically.

    A failed write raises WriteError (`PATH: could not write (REASON); ...`); the temporary file
    is removed whatever happens, and exceptions from the caller's own code propagate unchanged."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "Not a directory" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        raise WriteError(f"{path}: could not create directory {path.parent} ({reason})") from exc
    try:
        fd, tmp = _create_temp(path)
    except OSError as exc:
        raise _write_error(path, exc.strerror or str(exc)) from exc
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        failure = _failure(exc, tmp)
        if failure is None:
            raise
        raise _write_error(path, failure) from exc


def clean_stale(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writes left in `directory` (not its subdirectories);
    returns their paths. Only safe while nothing else writes there."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if _STALE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return sorted(removed)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def torch_save(obj, path: str | os.PathLike) -> None:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
