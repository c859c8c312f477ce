#!/usr/bin/env bash
# Install voxseg and everything it needs into .venv/ (what `make install` runs).
#
# Idempotent: each step checks first, so a second run on an installed tree takes seconds.
# The slow step, compiling MinkowskiEngine 0.5.4 from PyPI's sdist (CPU: ~12 min on 2 cores; CUDA,
# one arch: ~3 min on 16 cores), runs once per build key: the wheel is cached in
# $VOXSEG_CACHE/wheels/KEY, KEY holding all that changes the wheel (the MinkowskiEngine, torch and
# Python versions, torch's as installed; cpu, or the CUDA version and arch list; the hash of
# patch_minkowski.py, so an edited patch builds anew), and is reinstalled from there into any new
# venv. The sdist comes through pip's configured index (pip.conf, PIP_INDEX_URL, proxy: a mirror
# works), is checked against its sha256 and kept in $VOXSEG_CACHE/sdist, where a copy put by hand
# (a machine with no index) is used as is.
#
# CUDA or CPU: MinkowskiEngine is built with CUDA (--force_cuda, source patched with --cuda, for
# TORCH_CUDA_ARCH_LIST) when torch is a CUDA build (torch.version.cuda) and nvcc is found
# ($CUDA_HOME/bin/nvcc if CUDA_HOME is set, else nvcc on PATH, else /usr/local/cuda/bin/nvcc);
# otherwise CPU only (--cpu_only --blas=openblas). A venv's MinkowskiEngine that is CPU-only on
# the CUDA route, or was installed under another key, is replaced (one with no recorded key, from
# before keys were recorded or not installed by this script, is kept).
#
# Environment:
#   PYTHON                interpreter that creates the venv (default python3)
#   VOXSEG_CACHE          wheel and sdist cache (default ~/.cache/voxseg)
#   MAX_JOBS              parallel compile jobs of the MinkowskiEngine build (default: all cores)
#   VOXSEG_ME_CUDA        1: build MinkowskiEngine with CUDA (an error without nvcc or with a CPU
#                         torch); 0: CPU only; unset: decided as above
#   TORCH_CUDA_ARCH_LIST  GPU archs of the CUDA build, e.g. "8.6;9.0" (default: the compute
#                         capabilities of the visible GPUs, from torch or nvidia-smi)
#   CUDA_HOME             CUDA toolkit of the CUDA build (default: where nvcc is found)
#   VOXSEG_SYSTEM_TORCH   1: keep a torch that is already installed (a GPU image or container with
#                         its own CUDA torch, a machine with no package index): the venv is created
#                         with --system-site-packages, the pinned torch is installed only if no
#                         torch imports, and voxseg's other dependencies are installed around the
#                         one there (pyproject pins torch). An existing .venv made without
#                         --system-site-packages is an error (make clean).
#   VOXSEG_DEB_ROOT       a folder into which .deb files were unpacked with `dpkg -x` (a machine with
#                         no apt registry; tools/gpu_check.sh unpacks the ones brought along): a
#                         Debian package whose files are there ($VOXSEG_DEB_ROOT/usr/share/doc/PKG,
#                         which every package has) counts as installed and is not apt-get installed.
#                         The caller makes the build and the programs find those files (CPATH,
#                         LIBRARY_PATH, LD_LIBRARY_PATH, PATH), as tools/gpu_check.sh does.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PATCH="$ROOT/tools/install/patch_minkowski.py"  # also fetches the sdist and names cache keys
ME_STAMP="$VENV/.voxseg-me-key"                  # the key of the MinkowskiEngine wheel installed
CACHE="${VOXSEG_CACHE:-$HOME/.cache/voxseg}"
TORCH_VERSION=2.13.0
ME_VERSION=0.5.4  # the sdist's name and sha256 are in patch_minkowski.py, written for this version
SYSTEM_TORCH="${VOXSEG_SYSTEM_TORCH:-0}"
# Debian packages: OpenBLAS for ME's CPU kernels, ninja for its build, libusb for open3d's import.
SYSTEM_PACKAGES=(libopenblas-dev ninja-build libusb-1.0-0)

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }
die() { echo "install: $*" >&2; exit 1; }

case "$SYSTEM_TORCH" in 0|1) ;; *) die "VOXSEG_SYSTEM_TORCH must be 0 or 1, not '$SYSTEM_TORCH'" ;; esac
case "${VOXSEG_ME_CUDA:-}" in ""|0|1) ;; *) die "VOXSEG_ME_CUDA must be 0 or 1, not '$VOXSEG_ME_CUDA'" ;; esac

deb_unpacked() {  # $1: a Debian package; true when its files were unpacked into $VOXSEG_DEB_ROOT
  local doc="${VOXSEG_DEB_ROOT:-}/usr/share/doc/$1"
  [ -n "${VOXSEG_DEB_ROOT:-}" ] && { [ -e "$doc" ] || [ -L "$doc" ]; }  # (a doc folder may be a link)
}

install_system_packages() {
  local missing=()
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || deb_unpacked "$pkg" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root or sudo to apt-get install ${missing[*]}"
    sudo=sudo
  fi
  log "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

create_venv() {
  if [ "$SYSTEM_TORCH" = 1 ]; then
    if [ ! -x "$PY" ]; then
      log "creating $VENV (--system-site-packages: VOXSEG_SYSTEM_TORCH=1)"
      "${PYTHON:-python3}" -m venv --system-site-packages "$VENV"
    fi
    grep -qiE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" \
      || die "VOXSEG_SYSTEM_TORCH=1, but $VENV was made without --system-site-packages and" \
             "cannot see the installed torch: remove it (make clean) and run again"
    if "$PY" -c "import torch" 2>/dev/null; then
      log "keeping torch $("$PY" -c 'import torch; print(torch.__version__)') (VOXSEG_SYSTEM_TORCH=1)"
    else
      log "no torch importable: pip install torch==$TORCH_VERSION"
      "$PY" -m pip install -q "torch==$TORCH_VERSION"
    fi
    # the build's other needs, from the index only where missing (there may be none)
    local need=()
    "$PY" -c "import numpy" 2>/dev/null || need+=(numpy)
    "$PY" -c "import setuptools" 2>/dev/null || need+=(setuptools)
    "$PY" -c "import wheel" 2>/dev/null || "$PY" -c "import setuptools.command.bdist_wheel" 2>/dev/null \
      || need+=(wheel)
    [ ${#need[@]} -eq 0 ] || "$PY" -m pip install -q "${need[@]}"
    return 0
  fi
  [ -x "$PY" ] || { log "creating $VENV"; "${PYTHON:-python3}" -m venv "$VENV"; }
  # torch first and pinned: the CPU wheel on this machine's disk (an unpinned torch pulls CUDA).
  "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null \
    || { log "pip install torch==$TORCH_VERSION"; "$PY" -m pip install -q "torch==$TORCH_VERSION" numpy setuptools wheel; }
}

find_cuda() {  # sets CUDA_FOUND: the toolkit whose nvcc is found (see the header), or empty
  local candidates c home
  CUDA_FOUND=""
  if [ -n "${CUDA_HOME:-}" ]; then
    candidates=("$CUDA_HOME/bin/nvcc")
  else
    candidates=("$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc)
  fi
  for c in "${candidates[@]}"; do
    if [ -z "$c" ] || [ ! -x "$c" ]; then continue; fi
    # the toolkit is bin/..; a wrapper script elsewhere on PATH has no include/ beside it
    home="$(cd "$(dirname "$(readlink -f "$c")")/.." && pwd)"
    if [ -f "$home/include/cuda_runtime_api.h" ]; then CUDA_FOUND="$home"; return 0; fi
  done
}

choose_route() {  # sets ROUTE (cpu or cuda), TORCH_CUDA (torch.version.cuda, or empty), CUDA_FOUND
  TORCH_CUDA="$("$PY" -c 'import torch; print(torch.version.cuda or "")')"
  find_cuda
  case "${VOXSEG_ME_CUDA:-}" in
    0) ROUTE=cpu; WHY="VOXSEG_ME_CUDA=0" ;;
    1)
      [ -n "$CUDA_FOUND" ] || die "VOXSEG_ME_CUDA=1 but no nvcc found (\$CUDA_HOME/bin/nvcc," \
        "nvcc on PATH, /usr/local/cuda/bin/nvcc): install the CUDA toolkit or set CUDA_HOME"
      [ -n "$TORCH_CUDA" ] \
        || die "VOXSEG_ME_CUDA=1 but torch $("$PY" -c 'import torch; print(torch.__version__)') is a CPU build"
      ROUTE=cuda; WHY="VOXSEG_ME_CUDA=1" ;;
    *)
      if [ -z "$TORCH_CUDA" ]; then ROUTE=cpu; WHY="torch is a CPU build"
      elif [ -z "$CUDA_FOUND" ]; then ROUTE=cpu; WHY="torch has CUDA $TORCH_CUDA but no nvcc was found"
      else ROUTE=cuda; WHY="torch has CUDA $TORCH_CUDA, nvcc in $CUDA_FOUND"
      fi ;;
  esac
  if [ "$ROUTE" = cuda ]; then
    local nvcc_release
    nvcc_release="$("$CUDA_FOUND/bin/nvcc" --version | sed -n 's/.*release \([0-9][0-9.]*\),.*/\1/p')"
    [ "${nvcc_release%%.*}" = "${TORCH_CUDA%%.*}" ] \
      || die "nvcc in $CUDA_FOUND is CUDA ${nvcc_release:-?}, torch was built with CUDA $TORCH_CUDA:" \
             "their major versions must match (set CUDA_HOME, or VOXSEG_ME_CUDA=0)"
  fi
}

cuda_arch_list() {  # sets ARCH_LIST: $TORCH_CUDA_ARCH_LIST, else the visible GPUs' (or fails)
  ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-}"
  [ -n "$ARCH_LIST" ] && return 0
  ARCH_LIST="$("$PY" -c 'import torch
caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
print(";".join(f"{major}.{minor}" for major, minor in sorted(caps)))' 2>/dev/null || true)"
  if [ -z "$ARCH_LIST" ] && command -v nvidia-smi >/dev/null; then
    ARCH_LIST="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
      | tr -d ' ' | grep -E '^[0-9]+\.[0-9]+$' | sort -uV | paste -sd ';' || true)"
  fi
  [ -n "$ARCH_LIST" ] || return 1
  log "CUDA archs of the visible GPUs: $ARCH_LIST (TORCH_CUDA_ARCH_LIST overrides)"
}

build_minkowski_wheel() (  # $1: directory that receives the wheel; a subshell, so the trap stays local
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  sdist="$("$PY" "$PATCH" fetch "$CACHE/sdist")" || exit 1  # its error line says why
  tar -xzf "$sdist" -C "$work"
  src="$work/MinkowskiEngine-$ME_VERSION"
  [ -d "$src" ] || die "$sdist holds no MinkowskiEngine-$ME_VERSION/"
  if [ "$ROUTE" = cuda ]; then
    log "building MinkowskiEngine $ME_VERSION with CUDA $TORCH_CUDA for $ARCH_LIST (once per key; minutes per arch)"
    "$PY" "$PATCH" "$src" --cuda
    flags=(--force_cuda --blas=openblas)
    export CUDA_HOME="$CUDA_FOUND" TORCH_CUDA_ARCH_LIST="$ARCH_LIST" PATH="$CUDA_FOUND/bin:$PATH"
  else
    log "building MinkowskiEngine $ME_VERSION (CPU only, once per key; about 12 min on 2 cores)"
    "$PY" "$PATCH" "$src"
    flags=(--cpu_only --blas=openblas)
  fi
  # -g0: drop the debug info Python's CFLAGS add (faster build, 10x smaller wheel).
  (cd "$src" && PATH="$VENV/bin:$PATH" CFLAGS="-g0" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" setup.py -q bdist_wheel "${flags[@]}" > "$work/build.log" 2>&1) \
    || { tail -40 "$work/build.log" >&2; die "MinkowskiEngine build failed (log above)"; }
  mkdir -p "$1"
  # copy then rename, so an interrupted copy never leaves a truncated wheel in the cache
  wheel="$(ls "$src"/dist/*.whl)"
  cp "$wheel" "$1/.$(basename "$wheel").tmp" && mv "$1/.$(basename "$wheel").tmp" "$1/$(basename "$wheel")"
)

install_minkowski() {
  local installed key dir
  choose_route
  # cpu or cuda when the venv's MinkowskiEngine imports (its own or, VOXSEG_SYSTEM_TORCH=1, the system's)
  installed="$("$PY" -W ignore -c 'import MinkowskiEngine as ME
print("cuda" if ME.is_cuda_available() else "cpu")' 2>/dev/null || true)"
  if [ "$ROUTE" = cuda ]; then
    if ! cuda_arch_list; then
      if [ "$installed" = cuda ]; then
        log "no GPU visible (nor TORCH_CUDA_ARCH_LIST): keeping the installed CUDA MinkowskiEngine"
        return 0
      fi
      die "no GPU visible to take the CUDA archs from: set TORCH_CUDA_ARCH_LIST" \
          "(e.g. \"8.6;9.0\"), or VOXSEG_ME_CUDA=0 for a CPU build"
    fi
    key="$("$PY" "$PATCH" cache-key --cuda "$ARCH_LIST")"
  else
    key="$("$PY" "$PATCH" cache-key)"
  fi
  # Kept: an installed MinkowskiEngine of this key, or with no recorded key (installed before keys
  # were, or not by this script), unless it is CPU-only on the CUDA route.
  if [ -n "$installed" ]; then
    if [ "$ROUTE" = cuda ] && [ "$installed" = cpu ]; then
      log "the installed MinkowskiEngine is CPU-only ($WHY): replacing it with a CUDA build"
    elif [ -f "$ME_STAMP" ] && [ "$(cat "$ME_STAMP")" != "$key" ]; then
      log "the installed MinkowskiEngine is $(cat "$ME_STAMP"): replacing it with $key"
    else
      return 0
    fi
  fi
  log "MinkowskiEngine: $ROUTE build ($WHY), key $key"
  dir="$CACHE/wheels/$key"
  ls "$dir"/*.whl >/dev/null 2>&1 || build_minkowski_wheel "$dir"
  log "pip install MinkowskiEngine from $dir"
  "$PY" -m pip install -q --no-deps --force-reinstall "$dir"/*.whl
  echo "$key" > "$ME_STAMP"
}

install_voxseg() {
  if [ "$SYSTEM_TORCH" = 0 ]; then
    log "pip install -e .[dev]"
    "$PY" -m pip install -q -e "${ROOT}[dev]"
    return 0
  fi
  # pyproject pins torch==$TORCH_VERSION, which pip would install over the kept torch: install its
  # other dependencies (and the dev extra), then voxseg itself with --no-deps.
  local reqs=()
  mapfile -t reqs < <("$PY" - "$ROOT/pyproject.toml" <<'EOF'
import re
import sys

try:
    import tomllib
except ImportError:  # Python 3.10: pip's own copy of tomli
    from pip._vendor import tomli as tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for req in project["dependencies"] + project.get("optional-dependencies", {}).get("dev", []):
    if re.match(r"[A-Za-z0-9._-]+", req)[0].lower() not in ("torch", "minkowskiengine"):
        print(req)
EOF
  )
  [ ${#reqs[@]} -gt 0 ] || die "could not read the dependencies of $ROOT/pyproject.toml"
  log "pip install voxseg's dependencies but torch and MinkowskiEngine, then -e . --no-deps"
  "$PY" -m pip install -q "${reqs[@]}"
  "$PY" -m pip install -q --no-deps -e "$ROOT"
}

main() {
  install_system_packages
  create_venv
  install_minkowski
  install_voxseg
  "$PY" -W ignore -c "import MinkowskiEngine, open3d, hdbscan, voxseg, preprocessing" \
    || die "the import check failed"
  log "done: $("$PY" -W ignore -c 'import torch, MinkowskiEngine as ME
print(f"torch {torch.__version__}, MinkowskiEngine {ME.__version__}", "(CUDA)" if ME.is_cuda_available() else "(CPU)")')"
}

# Run unless sourced (tests/test_install.py sources it to call its functions).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main
fi
