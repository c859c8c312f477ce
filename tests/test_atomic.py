"""Atomic writes: file mode, failed writes (disk full) keep the old file, no temp files left behind."""

from __future__ import annotations

import errno
import os
import re
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT
from voxseg import atomic
from voxseg.errors import VoxsegError


@pytest.fixture
def old(tmp_path):
    """A file with content to keep."""
    path = tmp_path / "a.bin"
    path.write_bytes(b"old content")
    return path


def assert_kept(path, content=b"old content"):
    assert path.read_bytes() == content
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file


class HalfWritten:
    """A file that writes half of the first block it is given, then is full."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def disk_full(monkeypatch):
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: HalfWritten(real(*args, **kwargs)))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_mode_is_that_of_a_new_file(old, umask):
    previous = os.umask(umask)
    try:
        atomic.write_bytes(old, b"new")
        atomic.write_text(old.parent / "new" / "b.txt", "new")
    finally:
        os.umask(previous)
    assert old.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (old.parent / "new" / "b.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_disk_full_mid_write_keeps_the_old_file(old, disk_full):
    with pytest.raises(VoxsegError) as caught:
        atomic.write_bytes(old, b"new content" * 1000)
    assert str(caught.value) == f"{old}: could not write (No space left on device); the previous file is kept"
    assert_kept(old)


def test_disk_full_on_a_new_file(tmp_path, disk_full):
    with pytest.raises(VoxsegError, match=r"b\.txt: could not write \(No space left on device\); nothing was written"):
        atomic.write_text(tmp_path / "b.txt", "new")
    assert not list(tmp_path.iterdir())


def test_failed_fsync_keeps_the_old_file(old, monkeypatch):
    def fail(fd):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(VoxsegError) as caught:
        atomic.write_bytes(old, b"new")
    assert str(caught.value) == f"{old}: could not write (Disk quota exceeded); the previous file is kept"
    assert_kept(old)


def test_torch_save_failure_keeps_the_old_file(old, monkeypatch):
    torch = pytest.importorskip("torch")
    message = ("[enforce fail at inline_container.cc:595] . "
               "PytorchStreamWriter failed writing file data/0: file write failed")

    def fail(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError(message)

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(VoxsegError) as caught:
        atomic.torch_save({"w": torch.zeros(3)}, old)
    assert str(caught.value) == f"{old}: could not write ({message}); the previous file is kept"
    assert_kept(old)


def test_torch_save_on_a_full_disk_names_the_reason(old, disk_full):
    torch = pytest.importorskip("torch")
    with pytest.raises(VoxsegError, match=r"could not write \(No space left on device\); the previous file is kept"):
        atomic.torch_save({"w": torch.zeros(1000)}, old)
    assert_kept(old)


def test_ctrl_c_mid_write_keeps_the_old_file(old):
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_open(old) as f:
            f.write(b"partial")
            raise KeyboardInterrupt
    assert_kept(old)


def test_the_callers_own_errors_pass_unchanged(old):
    error = ValueError("not serializable")
    with pytest.raises(ValueError) as caught:
        with atomic.atomic_open(old, "w") as f:
            f.write("partial")
            raise error
    assert caught.value is error
    with pytest.raises(FileNotFoundError):  # about another file: not a failed write
        with atomic.atomic_open(old) as f:
            np.savez(f, a=np.load(old.parent / "missing.npy"))
    assert_kept(old)


def test_parent_that_is_a_file(old):
    with pytest.raises(VoxsegError) as caught:
        atomic.write_text(old / "b.txt", "new")
    assert str(caught.value) == f"{old / 'b.txt'}: could not create directory {old} (Not a directory)"
    with pytest.raises(VoxsegError, match=re.escape(f"{old / 'c' / 'b.txt'}: could not create directory {old / 'c'}")):
        atomic.write_text(old / "c" / "b.txt", "new")
    assert_kept(old)


def test_clean_stale_removes_only_temp_files_of_killed_writes(old):
    """A write killed outright (os._exit) leaves its temp file; clean_stale removes that alone."""
    code = ("import os, sys; from voxseg import atomic\n"
            "writing = atomic.atomic_open(sys.argv[1]); f = writing.__enter__()\n"
            "f.write(b'partial'); f.flush(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(old)], cwd=ROOT, check=True)
    [leftover] = [p for p in old.parent.iterdir() if p != old]
    keep = [".a.bin.tmp", ".a.bin.nothex00.tmp", "b.0123abcd.tmp", ".a.bin.0123abcd.tmp.bak", "c.txt"]
    for name in keep:
        (old.parent / name).write_text("keep")
    (old.parent / ".d.0123abcd.tmp").mkdir()
    assert atomic.clean_stale(old.parent) == [leftover]
    assert sorted(p.name for p in old.parent.iterdir()) == sorted([old.name, ".d.0123abcd.tmp", *keep])
    assert atomic.clean_stale(old.parent / "missing") == []


def test_real_write_failure_file_size_limit(old):
    """The kernel refuses the write (EFBIG past RLIMIT_FSIZE): no privileges needed."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        with pytest.raises(VoxsegError, match=r"could not write \(File too large\); the previous file is kept"):
            atomic.write_bytes(old, bytes(100_000))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert_kept(old)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs, where root may mount one; else skip."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root and the right to mount")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_real_full_disk(tiny_tmpfs):
    path = tiny_tmpfs / "a.bin"
    path.write_bytes(b"old content")
    with pytest.raises(VoxsegError, match=r"could not write \(No space left on device\); the previous file is kept"):
        atomic.write_bytes(path, bytes(1 << 20))
    assert_kept(path)
    torch = pytest.importorskip("torch")
    with pytest.raises(VoxsegError, match=r"could not write \(No space left on device\); the previous file is kept"):
        atomic.torch_save({"w": torch.zeros(1 << 18)}, path)
    assert_kept(path)
