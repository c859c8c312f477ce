"""Shared by the benchmarks: peak memory of a block of code; which code and machine made a result
and which code a run folder records; the generated blocks of the results page."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Callable

from voxseg import atomic
from voxseg.errors import VoxsegError

ROOT = Path(__file__).resolve().parents[1]
# What can change a training's result: the library, the preprocessing, the configs and the tools
# that run; their Python and YAML files (the rest there is documentation).
CODE_DIRS = ("voxseg", "preprocessing", "configs", "tools")
CODE_SUFFIXES = (".py", ".yaml")


class BenchError(VoxsegError):
    """A benchmark cannot go on: one line naming the file or flag and what to do."""


class PeakRSS:
    """Highest resident set size minus the size at entry, sampled from /proc every 5 ms (so it
    sees C/C++ allocations too, which tracemalloc does not)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @property
    def grown_gb(self) -> float:
        return (self.peak - self.base) / 1e9


def code_files(root: Path = ROOT, dirs: tuple[str, ...] = CODE_DIRS) -> list[str]:
    """The code files under `dirs` in the working tree (tracked or not, as a run imports them):
    root-relative POSIX paths, sorted."""
    found = []
    for top in dirs:
        for folder, subdirs, files in os.walk(root / top):
            subdirs[:] = [d for d in subdirs if d != "__pycache__"]
            found += [Path(folder, f).relative_to(root).as_posix() for f in files if f.endswith(CODE_SUFFIXES)]
    return sorted(found)


def code_hash(root: Path = ROOT, dirs: tuple[str, ...] = CODE_DIRS) -> str:
    """SHA-256 over the sorted code files, each as its path, a NUL byte and the SHA-256 of its
    bytes: any changed byte, added, removed or renamed file changes it; timestamps do not. From
    the working tree, so it needs no git (a Docker image has none)."""
    digest = hashlib.sha256()
    for path in code_files(root, dirs):
        digest.update(path.encode() + b"\0" + hashlib.sha256((root / path).read_bytes()).digest())
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_identity(root: Path = ROOT, dirs: tuple[str, ...] = CODE_DIRS) -> dict:
    """The code a run is made with: `code_hash` (the working tree's, see code_hash), the git
    `commit` checked out and whether the code files differ from it (`dirty`: changed, deleted or
    untracked ones); commit and dirty are None outside a git checkout. A result reproduces at its
    commit only if it was not dirty."""
    commit = _git(root, "rev-parse", "HEAD")
    changed = _git(root, "diff", "--name-only", "-z", "HEAD", "--", *dirs)
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", *dirs)
    dirty = None
    if commit is not None and changed is not None and untracked is not None:
        dirty = any(p.endswith(CODE_SUFFIXES) for p in (changed + untracked).split("\0"))
    return {"code_hash": code_hash(root, dirs), "commit": commit.strip() if commit else None, "dirty": dirty}


def cpu_identity(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model and its widest vector instructions, e.g. 'Intel(R) Xeon(R) Processor (family 6
    model 207, avx512)': CPU kernels take other code paths on other models, so a run repeats bit
    for bit only on the same kind of CPU. Read from `cpuinfo` (Linux); elsewhere the platform's
    processor name."""
    from voxseg.sparse import cpuinfo_fields

    fields = cpuinfo_fields(cpuinfo)
    if fields is None:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    isa = next((name for name, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx")) if flag in flags),
               "no avx")
    name = fields.get("model name", platform.processor() or platform.machine())
    return f"{name} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, {isa})"


def loaded_openblas_kernels() -> str:
    """The kernels of the OpenBLAS that MinkowskiEngine links (libopenblas*, not numpy's bundled
    libscipy_openblas) as loaded in this process (voxseg.sparse chooses them before it loads)."""
    from threadpoolctl import threadpool_info

    import voxseg.sparse  # noqa: F401  (loads MinkowskiEngine and its OpenBLAS)

    found = [info.get("architecture") or "?" for info in threadpool_info()
             if info.get("internal_api") == "openblas" and Path(info["filepath"]).name.startswith("libopenblas")]
    return ", ".join(found) or "none"


def describe_cpus(machine: dict) -> str:
    """'2 CPUs', or '2 CPUs (Intel(R) Xeon(R) Processor (family 6 model 207, avx512))' where the
    record names the CPU (records made before cpu_identity do not)."""
    return f"{machine['cpus']} CPUs" + (f" ({machine['cpu']})" if machine.get("cpu") else "")


def machine_info(device: str) -> dict:
    """Where a result was measured: OS, CPU (cpu_identity, and the OpenBLAS kernels loaded, which
    set the CPU's code path as much as its model does), core count, Python, torch,
    MinkowskiEngine and the device that `device` (auto | cpu | cuda[:N]) resolves to, with the
    GPU's name."""
    import torch

    from voxseg.engine.device import pick_device
    from voxseg.sparse import ME

    resolved = pick_device(device, option="--device")
    cpu = f"{cpu_identity()}, OpenBLAS {loaded_openblas_kernels()}"
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "minkowskiengine": ME.__version__, "device": str(resolved),
            "gpu": torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else None}


def recorded_code(run_dir: Path) -> dict | None:
    """The code identity a run folder's code.json records; None if it has none (or an unreadable one)."""
    try:
        code = json.loads((run_dir / "code.json").read_text())
    except (OSError, ValueError):
        return None
    return code if isinstance(code, dict) and isinstance(code.get("code_hash"), str) else None


def describe_code(code: dict) -> str:
    commit = "no commit" if code.get("commit") is None else f"commit {code['commit'][:7]}"
    return f"code {code['code_hash'][:12]} ({commit}{', dirty' if code.get('dirty') else ''})"


def replace_block(text: str, block: list[str], path: Path, begin: str, end: str) -> str:
    """`text` (a results page) with the lines between its `begin` and `end` marker lines replaced
    by `block`, indented as the begin marker is (so a table may sit in a list item)."""
    lines = text.split("\n")
    begins = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise BenchError(f"{path}: needs one '{begin}' line and one '{end}' line after it")
    first, last = begins[0], ends[0]
    indent = lines[first][:len(lines[first]) - len(lines[first].lstrip())]
    return "\n".join(lines[:first + 1] + [indent + line if line else "" for line in block] + lines[last:])


def commit_problem(code: dict) -> str | None:
    """Why results made by `code` (code_identity) may not be a record, or None: a record names a
    commit whose code made it (a recorded result reproduces when rerun at its commit)."""
    if code["commit"] is None:
        return "no git commit names the code"
    if code["dirty"]:
        return f"the code differs from commit {code['commit'][:7]} (dirty): commit it and rerun"
    return None


def set_aside(run_dir: Path, out: Path) -> Path:
    """Move a run folder under `out` that must run again to OUT/stale/<the code hash it records,
    12 digits, or 'unrecorded'>/<its folder under OUT>, keeping it there rather than deleting
    hours of work over an edited comment (an older copy there is replaced). Returns where it went."""
    made_by = recorded_code(run_dir)
    target = out / "stale" / (made_by["code_hash"][:12] if made_by else "unrecorded") / run_dir.relative_to(out)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    run_dir.rename(target)
    return target


def read_record(path: Path, writer: str) -> dict:
    """A benchmark's record (JSON object) at `path`; one clear line if it is missing (naming the
    `writer` command that makes it) or unreadable."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{path}: no recorded result; `{writer}` writes it") from None
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: not a readable JSON record ({exc})") from exc
    if not isinstance(record, dict):
        raise BenchError(f"{path}: not a record (a JSON object)")
    return record


def root_relative(path: Path) -> str:
    """`path` as the results page names a record: relative to the repository root where it is inside."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def render_page_block(record_path: Path, page_path: Path, load: Callable[[Path], dict],
                      render: Callable[[dict, str], list[str]], begin: str, end: str, what: str) -> None:
    """Rewrite the block of the results page between `begin` and `end` from a record (`load` reads
    it, `render` makes the block's lines from it and its root-relative path); both are read and
    the block made before the page is written (atomically), so a bad record leaves it as it was."""
    record = load(record_path)
    try:
        block = render(record, root_relative(record_path))
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"{record_path}: not {what} record ({type(exc).__name__}: {exc})") from exc
    try:
        page = page_path.read_text()
    except OSError as exc:
        raise BenchError(f"{page_path}: cannot read it ({exc.strerror})") from exc
    atomic.write_text(page_path, replace_block(page, block, page_path, begin, end))
