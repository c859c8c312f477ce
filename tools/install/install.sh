#!/usr/bin/env bash
# Install voxseg and everything it needs into .venv/ (what `make install` runs).
#
# Idempotent: each step checks first, so a second run on an installed tree takes seconds.
# The slow step, compiling MinkowskiEngine 0.5.4 from PyPI's sdist (~12 min on 2 cores), runs
# once per machine: the wheel is cached in $VOXSEG_CACHE (default ~/.cache/voxseg), keyed by the
# MinkowskiEngine, torch and Python versions, and reinstalled from there into any new venv.
#
# Environment: PYTHON (interpreter for the venv, default python3), VOXSEG_CACHE, MAX_JOBS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CACHE="${VOXSEG_CACHE:-$HOME/.cache/voxseg}"
TORCH_VERSION=2.13.0
ME_VERSION=0.5.4
ME_URL="https://files.pythonhosted.org/packages/21/5c/c543c4bc5fbe73ac3e38465b3da4f24a61f7a4ac5baec867e582e94aa551/MinkowskiEngine-0.5.4.tar.gz"
ME_SHA256=b1879c00d0b0b1d30ba622cce239886a7e3c78ee9da1064cdfe2f64c2ab15f94
# Debian packages: OpenBLAS for ME's CPU kernels, ninja for its build, libusb for open3d's import.
SYSTEM_PACKAGES=(libopenblas-dev ninja-build libusb-1.0-0)

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

install_system_packages() {
  local missing=()
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install: need root or sudo to apt-get install ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  log "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

create_venv() {
  [ -x "$PY" ] || { log "creating $VENV"; "${PYTHON:-python3}" -m venv "$VENV"; }
  # torch first and pinned: the CPU wheel on this machine's disk (an unpinned torch pulls CUDA).
  "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null \
    || { log "pip install torch==$TORCH_VERSION"; "$PY" -m pip install -q "torch==$TORCH_VERSION" numpy setuptools wheel; }
}

build_minkowski_wheel() (  # $1: directory that receives the wheel; a subshell, so the trap stays local
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  log "building MinkowskiEngine $ME_VERSION (CPU only, once per machine; about 12 min on 2 cores)"
  curl -fsSL --retry 3 -o "$work/me.tar.gz" "$ME_URL"
  echo "$ME_SHA256  $work/me.tar.gz" | sha256sum -c --quiet -
  tar -xzf "$work/me.tar.gz" -C "$work"
  src="$work/MinkowskiEngine-$ME_VERSION"
  "$PY" "$ROOT/tools/install/patch_minkowski.py" "$src"
  # -g0: drop the debug info Python's CFLAGS add (faster build, 10x smaller wheel).
  (cd "$src" && PATH="$VENV/bin:$PATH" CFLAGS="-g0" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" setup.py -q bdist_wheel --cpu_only --blas=openblas > "$work/build.log" 2>&1) \
    || { tail -40 "$work/build.log" >&2; echo "install: MinkowskiEngine build failed (log above)" >&2; exit 1; }
  mkdir -p "$1"
  # copy then rename, so an interrupted copy never leaves a truncated wheel in the cache
  wheel="$(ls "$src"/dist/*.whl)"
  cp "$wheel" "$1/.$(basename "$wheel").tmp" && mv "$1/.$(basename "$wheel").tmp" "$1/$(basename "$wheel")"
)

install_minkowski() {
  "$PY" -c "import MinkowskiEngine" 2>/dev/null && return
  local pyver key dir
  pyver="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  key="MinkowskiEngine-$ME_VERSION-torch-$TORCH_VERSION-$pyver-cpu"
  dir="$CACHE/wheels/$key"
  ls "$dir"/*.whl >/dev/null 2>&1 || build_minkowski_wheel "$dir"
  log "pip install MinkowskiEngine from $dir"
  "$PY" -m pip install -q --no-deps "$dir"/*.whl
}

install_voxseg() {
  log "pip install -e .[dev]"
  "$PY" -m pip install -q -e "$ROOT[dev]"
}

install_system_packages
create_venv
install_minkowski
install_voxseg
"$PY" -W ignore -c "import MinkowskiEngine, open3d, hdbscan, voxseg, preprocessing" \
  || { echo "install: the import check failed" >&2; exit 1; }
log "done: $("$PY" -W ignore -c 'import torch, MinkowskiEngine as ME; print(f"torch {torch.__version__}, MinkowskiEngine {ME.__version__}")')"
