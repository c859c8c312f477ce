"""tools/install: patch_minkowski.py (the sdist fetch, every edit, idempotence, anchors, cache keys)
and install.sh's decisions (CPU or CUDA build, arch list, the system-torch mode), without building.

The sdist is fetched once through pip's configured index, as install.sh does; without a network
the tests that need it are skipped. Nothing here touches the repository's .venv or the wheel cache.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from tests.helpers import ROOT, fake_torch

PATCH = ROOT / "tools" / "install" / "patch_minkowski.py"
INSTALL = ROOT / "tools" / "install" / "install.sh"


def _load_patch_module():
    spec = importlib.util.spec_from_file_location("patch_minkowski", PATCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pm = _load_patch_module()


def run_patch(*args: str, env: dict | None = None, script: Path = PATCH) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=300, env=env)


def offline_env(index_url: str) -> dict:
    """pip pointed at `index_url` only: no config files, no retries, a short timeout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=index_url, PIP_RETRIES="0",
               PIP_TIMEOUT="5", PIP_DISABLE_PIP_VERSION_CHECK="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("patch_minkowski:")
            and "downloading" not in line]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("sdist")
    result = run_patch("fetch", str(dest))
    if result.returncode != 0:
        reason = (errors(result.stderr) or result.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"MinkowskiEngine sdist not downloadable here: {reason}")
    path = Path(result.stdout.strip())
    assert path == dest / pm.ME_SDIST
    return path


@pytest.fixture(scope="module")
def pristine(sdist, tmp_path_factory) -> Path:
    """The unpacked sdist, never patched (tests patch copies of it)."""
    dest = tmp_path_factory.mktemp("pristine")
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dest / f"MinkowskiEngine-{pm.ME_VERSION}"


@pytest.fixture
def source(pristine, tmp_path) -> Path:
    copy = tmp_path / pristine.name
    shutil.copytree(pristine, copy)
    return copy


# --- fetch ---------------------------------------------------------------------------------------

def test_fetch_gives_the_checked_sdist(sdist):
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() == pm.ME_SHA256
    assert not [p for p in sdist.parent.iterdir() if p.name.endswith(".part")]


def test_fetch_reuses_a_verified_copy_without_the_network(sdist, tmp_path):
    dest = tmp_path / "cache"
    dest.mkdir()
    shutil.copy(sdist, dest / pm.ME_SDIST)
    result = run_patch("fetch", str(dest), env=offline_env(f"http://127.0.0.1:{free_port()}/simple"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(dest / pm.ME_SDIST)
    assert "downloading" not in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Mirror:
    """A PEP 503 index on localhost serving `payload` as the MinkowskiEngine sdist."""

    def __init__(self, root: Path, payload: bytes):
        (root / "simple" / "minkowskiengine").mkdir(parents=True)
        (root / "files").mkdir()
        (root / "files" / pm.ME_SDIST).write_bytes(payload)
        (root / "simple" / "minkowskiengine" / "index.html").write_text(
            f'<html><body><a href="../../files/{pm.ME_SDIST}">{pm.ME_SDIST}</a></body></html>')
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, fmt, *args):
                mirror.requests.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_fetch_takes_the_sdist_through_the_configured_index(sdist, tmp_path):
    with _Mirror(tmp_path / "mirror", sdist.read_bytes()) as mirror:
        result = run_patch("fetch", str(tmp_path / "dest"), env=offline_env(mirror.url))
    assert result.returncode == 0, result.stderr
    got = tmp_path / "dest" / pm.ME_SDIST
    assert result.stdout.strip() == str(got)
    assert got.read_bytes() == sdist.read_bytes()
    assert f"/files/{pm.ME_SDIST}" in mirror.requests  # from the mirror, not files.pythonhosted.org


def test_fetch_refuses_a_file_with_another_checksum(sdist, tmp_path):
    with _Mirror(tmp_path / "mirror", sdist.read_bytes()[:-1] + b"x") as mirror:
        result = run_patch("fetch", str(tmp_path / "dest"), env=offline_env(mirror.url))
    assert result.returncode != 0
    lines = errors(result.stderr)
    assert len(lines) == 1 and "sha256" in lines[0] and pm.ME_SHA256 in lines[0], result.stderr
    assert not (tmp_path / "dest").exists() or not list((tmp_path / "dest").iterdir())


def test_fetch_with_no_index_reachable_fails_with_one_line(tmp_path):
    result = run_patch("fetch", str(tmp_path / "dest"),
                       env=offline_env(f"http://127.0.0.1:{free_port()}/simple"))
    assert result.returncode != 0
    lines = errors(result.stderr)
    assert len(lines) == 1 and pm.ME_SDIST in lines[0] and "failed" in lines[0], result.stderr


# --- the edits -----------------------------------------------------------------------------------

def test_cuda_patch_applies_every_edit(source, pristine):
    result = run_patch(str(source), "--cuda")
    assert result.returncode == 0, result.stderr
    for rel, _, new in pm.COMMON_EDITS + pm.CUDA_EDITS:
        assert new in (source / rel).read_text(), rel
    setup = (source / "setup.py").read_text()
    assert 'run_command("pip", "uninstall"' not in setup
    # CUDA 13: include/cccl on the include path, inside the CUDA branch, only when it exists
    cuda_branch = setup[setup.index('libraries.append("cusparse")'):setup.index("if not (CUDA_HOME is False)")]
    assert '"include", "cccl"' in cuda_branch and "os.path.isdir(CCCL_DIR)" in cuda_branch
    assert "include_dirs.append(CCCL_DIR)" in cuda_branch
    compile(setup, "setup.py", "exec")
    # CUDA 13: every prefetch goes through the version-conditional helper
    cmap = (source / "src/3rdparty/concurrent_unordered_map.cuh").read_text()
    helper = cmap[cmap.index("inline cudaError_t voxseg_prefetch_async"):cmap.index("namespace {")]
    assert "#if CUDART_VERSION >= 13000" in helper and "cudaMemLocationTypeDevice" in helper
    assert "cudaMemPrefetchAsync(ptr, count, location, 0 /* flags */, stream)" in helper
    assert "cudaMemPrefetchAsync(ptr, count, dev_id, stream)" in helper  # the < 13 branch
    assert cmap.count("cudaMemPrefetchAsync(") == 2  # both in the helper
    assert cmap.count("voxseg_prefetch_async(") == 1 + 3
    assert (pristine / "src/3rdparty/concurrent_unordered_map.cuh").read_text().count(
        "cudaMemPrefetchAsync(") == 3
    # one cached cuSPARSE handle per device and thread
    gpu = (source / "src/gpu.cu").read_text()
    body = gpu[gpu.index("cusparseHandle_t getCurrentCUDASparseHandle() {"):]
    body = body[:body.index("\n}\n")]
    assert "thread_local std::vector<cusparseHandle_t> handles;" in body
    assert body.count("cusparseCreate(") == 1
    assert body.index("if (handles[device] == nullptr)") < body.index("cusparseCreate(&handles[device])")
    assert "cudaGetDevice(&device)" in body and "return handles[device];" in body


def test_second_run_changes_nothing(source):
    assert run_patch(str(source), "--cuda").returncode == 0
    before = tree_bytes(source)
    result = run_patch(str(source), "--cuda")
    assert result.returncode == 0, result.stderr
    assert "patched" not in result.stdout
    assert tree_bytes(source) == before


def test_cpu_patch_leaves_the_cuda_sources_alone(source, pristine):
    result = run_patch(str(source))
    assert result.returncode == 0, result.stderr
    after, original = tree_bytes(source), tree_bytes(pristine)
    changed = {rel for rel in original if after[rel] != original[rel]}
    assert changed == {rel for rel, _, _ in pm.COMMON_EDITS}


@pytest.mark.parametrize("breakage", ["anchor", "file"])
def test_a_missing_anchor_is_one_error_naming_the_file(source, breakage):
    gpu = source / "src" / "gpu.cu"
    if breakage == "anchor":
        gpu.write_text(gpu.read_text().replace("CUSPARSE_CHECK(cusparseCreate(&handle));", "/* gone */"))
    else:
        gpu.unlink()
    result = run_patch(str(source), "--cuda")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("patch_minkowski: ") and "src/gpu.cu" in lines[0]
    assert ("expected text not found" if breakage == "anchor" else "file not found") in lines[0]


def _nvcc() -> str | None:
    found = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    return found if os.access(found, os.X_OK) else None


@pytest.mark.skipif(_nvcc() is None, reason="no nvcc: the CUDA edits are not compiled")
def test_patched_hash_map_compiles_with_this_nvcc(source, tmp_path):
    """The map's create() and prefetch() instantiated against this toolkit's cuda_runtime_api.h
    (on CUDA 13 the unpatched prefetch calls do not compile)."""
    assert run_patch(str(source), "--cuda").returncode == 0
    unit = tmp_path / "map.cu"
    unit.write_text('#include "3rdparty/concurrent_unordered_map.cuh"\n'
                    "int use() {\n"
                    "  auto map = concurrent_unordered_map<int, int>::create(100);\n"
                    "  return map->prefetch(0);\n"
                    "}\n")
    result = subprocess.run(
        [_nvcc(), "--cuda", "-arch=compute_75", "-std=c++17", "--expt-relaxed-constexpr",
         "--expt-extended-lambda", f"-I{source / 'src'}", f"-I{source / 'src' / '3rdparty'}",
         str(unit), "-o", str(tmp_path / "map.ii")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


# --- cache keys ----------------------------------------------------------------------------------

def test_cache_key_follows_the_patch_script(tmp_path):
    import torch

    same, edited = tmp_path / "same.py", tmp_path / "edited.py"
    shutil.copy(PATCH, same)
    edited.write_text(PATCH.read_text() + "\n# an edit\n")
    keys = {}
    for script in (PATCH, same, edited):
        result = run_patch("cache-key", script=script)
        assert result.returncode == 0, result.stderr
        keys[script.name] = result.stdout.strip()
    assert keys["patch_minkowski.py"] == keys["same.py"] != keys["edited.py"]
    key = keys["patch_minkowski.py"]
    assert f"-torch-{torch.__version__}-" in key
    assert f"-cp{sys.version_info[0]}{sys.version_info[1]}-" in key
    assert key.endswith(f"-patch-{hashlib.sha256(PATCH.read_bytes()).hexdigest()[:12]}")
    assert "-cpu-" in key  # no --cuda: the CPU build's key


def test_cache_key_of_a_cuda_build():
    cpu = pm.cache_key("2.11.0+cu130", "cp312", b"script")
    cuda = pm.cache_key("2.11.0+cu130", "cp312", b"script", "13.0", "8.6;9.0+PTX")
    assert "-cpu-" in cpu and "cuda" not in cpu
    assert "-cuda13.0-arch8.6_9.0+PTX-" in cuda
    assert len({cpu, cuda,
                pm.cache_key("2.11.0+cu130", "cp312", b"script", "13.0", "9.0"),
                pm.cache_key("2.11.0+cu130", "cp312", b"script", "12.8", "8.6;9.0+PTX"),
                pm.cache_key("2.13.0", "cp312", b"script", "13.0", "8.6;9.0+PTX"),
                pm.cache_key("2.11.0+cu130", "cp312", b"script!", "13.0", "8.6;9.0+PTX")}) == 6
    assert pm.cache_key("2.11.0", "cp312", b"s", "13.0", "8.6 9.0") == \
        pm.cache_key("2.11.0", "cp312", b"s", "13.0", "8.6;9.0")
    with pytest.raises(ValueError):
        pm.cache_key("2.11.0", "cp312", b"s", "13.0", "")


# --- install.sh's decisions (its functions, sourced; nothing installed) --------------------------



@pytest.fixture
def sandbox(tmp_path) -> dict:
    """A fake torch module, a fake CUDA toolkit and a PATH whose nvidia-smi sees no GPU."""
    fake_torch(tmp_path)
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "include" / "cuda_runtime_api.h").write_text("")
    nvcc = toolkit / "bin" / "nvcc"
    nvcc.write_text('#!/bin/sh\necho "Cuda compilation tools, release ${FAKE_NVCC:-13.0}, V13.0.88"\n')
    nvcc.chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    smi = tools / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexit 9\n")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if k not in ("VOXSEG_ME_CUDA", "VOXSEG_SYSTEM_TORCH", "TORCH_CUDA_ARCH_LIST", "CUDA_HOME")}
    env.update(PYTHONPATH=str(tmp_path / "fake"), CUDA_HOME=str(toolkit),
               PATH=f"{tools}:{os.environ['PATH']}")
    return env


def sourced(script: str, env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `script` after sourcing install.sh, with its venv and cache pointed into tmp_path."""
    prelude = (f'source "{INSTALL}"\n'
               f'VENV="{tmp_path}/venv"; PY="{sys.executable}"; CACHE="{tmp_path}/cache"\n'
               f'ME_STAMP="$VENV/.voxseg-me-key"\n')
    return subprocess.run(["bash", "-c", prelude + script], capture_output=True, text=True,
                          env=env, timeout=120)


ROUTE = 'choose_route; echo "$ROUTE|$WHY|$CUDA_FOUND"'


def test_install_sh_parses():
    assert subprocess.run(["bash", "-n", str(INSTALL)]).returncode == 0


def test_route_is_cuda_with_a_cuda_torch_and_nvcc(sandbox, tmp_path):
    result = sourced(ROUTE, sandbox, tmp_path)
    assert result.returncode == 0, result.stderr
    route, why, home = result.stdout.strip().split("|")
    assert route == "cuda" and "13.0" in why and home == str((tmp_path / "cuda").resolve())


@pytest.mark.parametrize("case, want", [
    ({"FAKE_CUDA": ""}, "torch is a CPU build"),
    ({"CUDA_HOME": "/nonexistent"}, "no nvcc"),
    ({"VOXSEG_ME_CUDA": "0"}, "VOXSEG_ME_CUDA=0"),
])
def test_route_is_cpu_otherwise(sandbox, tmp_path, case, want):
    result = sourced(ROUTE, {**sandbox, **case}, tmp_path)
    assert result.returncode == 0, result.stderr
    route, why, _ = result.stdout.strip().split("|")
    assert route == "cpu" and want in why


@pytest.mark.parametrize("case, want", [
    ({"VOXSEG_ME_CUDA": "1", "CUDA_HOME": "/nonexistent"}, "VOXSEG_ME_CUDA=1 but no nvcc found"),
    ({"VOXSEG_ME_CUDA": "1", "FAKE_CUDA": ""}, "is a CPU build"),
    ({"FAKE_NVCC": "12.8"}, "major versions must match"),
    ({"VOXSEG_ME_CUDA": "yes"}, "VOXSEG_ME_CUDA must be 0 or 1"),
])
def test_route_errors(sandbox, tmp_path, case, want):
    result = sourced(ROUTE, {**sandbox, **case}, tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("install: ") and want in result.stderr


@pytest.mark.parametrize("case, want", [
    ({"FAKE_GPUS": "3"}, "8.6;9.0"),
    ({"FAKE_GPUS": "3", "TORCH_CUDA_ARCH_LIST": "8.0;9.0+PTX"}, "8.0;9.0+PTX"),
])
def test_arch_list(sandbox, tmp_path, case, want):
    result = sourced('cuda_arch_list; echo "ARCH=$ARCH_LIST"', {**sandbox, **case}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"ARCH={want}"


def test_arch_list_without_a_visible_gpu_fails(sandbox, tmp_path):
    result = sourced('cuda_arch_list || echo "NONE"', sandbox, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "NONE"


FAKE_ME = '''import os
if not os.environ.get("FAKE_ME"):
    raise ImportError("no MinkowskiEngine here")
def is_cuda_available():
    return os.environ["FAKE_ME"] == "cuda"
'''

# install_minkowski with the build replaced by a fake wheel, and pip recorded
INSTALL_ME = '''build_minkowski_wheel() { echo "BUILD"; mkdir -p "$1"; touch "$1/MinkowskiEngine-0.5.4-x.whl"; }
mkdir -p "$VENV"; PY="$RECORDER"; install_minkowski; echo "KEY=$(cat "$ME_STAMP" 2>/dev/null)"
'''


def test_install_minkowski_builds_once_per_key_and_replaces_what_does_not_fit(sandbox, tmp_path):
    (tmp_path / "fake" / "MinkowskiEngine").mkdir()
    (tmp_path / "fake" / "MinkowskiEngine" / "__init__.py").write_text(FAKE_ME)
    env = {**sandbox, "RECORDER": str(_pip_recorder(tmp_path)), "FAKE_GPUS": "2"}
    pip_log = tmp_path / "pip.log"

    def install(**case):
        pip_log.unlink(missing_ok=True)
        result = sourced(INSTALL_ME, {**env, **case}, tmp_path)
        assert result.returncode == 0, result.stderr
        calls = pip_log.read_text().splitlines() if pip_log.exists() else []
        return result.stdout, calls

    out, calls = install()  # nothing installed: build, install, record the key
    key = out.strip().splitlines()[-1].removeprefix("KEY=")
    assert "-cuda13.0-arch8.6_9.0-" in key and "BUILD" in out
    wheel = tmp_path / "cache" / "wheels" / key / "MinkowskiEngine-0.5.4-x.whl"
    assert calls == [f"install -q --no-deps --force-reinstall {wheel}"]
    out, calls = install(FAKE_ME="cuda")  # installed with this key: nothing to do
    assert "BUILD" not in out and calls == []
    out, calls = install(FAKE_ME="cpu")  # CPU-only on the CUDA route: reinstalled from the cache
    assert "CPU-only" in out and "BUILD" not in out and len(calls) == 1
    (tmp_path / "venv" / ".voxseg-me-key").write_text("an-older-key\n")
    out, calls = install(FAKE_ME="cuda")  # another key: reinstalled
    assert "an-older-key" in out and len(calls) == 1 and out.strip().endswith(key)
    out, calls = install(FAKE_ME="cuda", FAKE_GPUS="0")  # no GPU to read archs from: kept
    assert "keeping the installed CUDA MinkowskiEngine" in out and calls == []
    result = sourced(INSTALL_ME, {**env, "FAKE_GPUS": "0"}, tmp_path)  # ... unless there is none
    assert result.returncode != 0 and "set TORCH_CUDA_ARCH_LIST" in result.stderr
    (tmp_path / "venv" / ".voxseg-me-key").unlink()
    out, calls = install(FAKE_ME="cpu", FAKE_CUDA="")  # CPU route, no recorded key: kept
    assert "BUILD" not in out and calls == []


def test_cuda_key_from_install_sh(sandbox, tmp_path):
    result = sourced('choose_route; cuda_arch_list; "$PY" "$PATCH" cache-key --cuda "$ARCH_LIST"',
                     {**sandbox, "FAKE_GPUS": "2"}, tmp_path)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("MinkowskiEngine-0.5.4-torch-2.11.0+cu130-")
    assert "-cuda13.0-arch8.6_9.0-patch-" in key


def _pip_recorder(tmp_path: Path) -> Path:
    """A python that records `-m pip` calls instead of running them."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then shift 2; '
                       f'echo "$*" >> "{tmp_path}/pip.log"; exit 0; fi\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_system_torch_keeps_the_installed_torch(sandbox, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("include-system-site-packages = true\n")
    shutil.copy(_pip_recorder(tmp_path), venv / "bin" / "python")
    result = sourced(f'PY="{venv}/bin/python"; create_venv; install_voxseg',
                     {**sandbox, "VOXSEG_SYSTEM_TORCH": "1"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "keeping torch 2.11.0+cu130" in result.stdout
    calls = (tmp_path / "pip.log").read_text().splitlines()
    assert not any("torch==" in call for call in calls), calls
    deps = next(call for call in calls if "open3d" in call).split()
    assert "pytest>=7.4" in deps and not [d for d in deps if d.lower().startswith(("torch", "minkowski"))]
    assert calls[-1] == f"install -q --no-deps -e {ROOT}"


def test_system_torch_refuses_a_venv_without_system_site_packages(sandbox, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("include-system-site-packages = false\n")
    shutil.copy(_pip_recorder(tmp_path), venv / "bin" / "python")
    result = sourced(f'PY="{venv}/bin/python"; create_venv', {**sandbox, "VOXSEG_SYSTEM_TORCH": "1"},
                     tmp_path)
    assert result.returncode != 0 and "--system-site-packages" in result.stderr
    assert not (tmp_path / "pip.log").exists()
