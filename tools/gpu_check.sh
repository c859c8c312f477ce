#!/usr/bin/env bash
# `make gpu-check`: voxseg's GPU paths, end to end, on a CUDA machine, with one summary at the end.
#
# Without a CUDA GPU (no nvidia-smi, nvidia-smi sees none, or $PYTHON's torch sees none) it prints
# one line and exits 0, before touching any venv. Otherwise, each step timed, its whole output in
# OUT/logs/STEP.log, a failing step recorded and the check going on (a step that needs a failed
# one is SKIP):
#   install       .venv by tools/install/install.sh on its CUDA route: VOXSEG_SYSTEM_TORCH=1 (keep
#                 $PYTHON's CUDA torch), VOXSEG_ME_CUDA=1 (build MinkowskiEngine with CUDA and the
#                 CUDA 13 patches for the visible GPUs' archs, or reuse the wheel cached in
#                 $VOXSEG_CACHE/wheels/KEY; the build: ~190 s for sm_90 on 16 cores, once per KEY)
#   cuda-tests    pytest -m cuda tests -q (GPU = CPU forward/backward, GPU fine-tune and inference,
#                 ASIS with the GPU kNN and mean-shift); a skipped test counts as a failure
#   synthetic     tools/make_synthetic.py: 10 scans at KITTI's resolution (00=8, 04=2) in OUT/data
#   preprocess    tools/preprocess.py on sequence 00: ISCC groups, windows of 4 scans every 2
#                 (synthetic and preprocess run in the background, during cuda-tests: CPU only)
#   bench-scan    benchmarks/backbone.py --voxel-sizes 0.05: ms per step, overhead and memory ratio
#   bench-batch8  benchmarks/backbone.py --batch 8 --voxel-sizes 0.05: scans/s and the ratios
#                 (the benchmarks on real KITTI scans, $VOXSEG_KITTI_REAL or ../shared/data/kitti_real,
#                 else on the synthetic scans of sequence 00; the summary says which)
#   finetune      tools/finetune.py on the GPU: 20 steps at 0.05 m, batch 2, validation on 2 scans
#   ddp-nccl      2 such steps under torchrun through voxseg's data-parallel path with NCCL
#                 (tools/gpu_check_ddp.py: DDP even in a world of one; 2 processes with 2+ GPUs)
#   pretrain      tools/pretrain.py, ISCC: 10 steps at 0.05 m on the groups of `preprocess`
# then the summary (tools/gpu_check_summary.py): the GPU, each step's result, seconds and figures
# (ratios, scans/s, mIoU), the tail of each failed step's log; exit status 1 if a step failed.
# Budget: under 9 minutes (540 s) on one H100 with 16 cores, the MinkowskiEngine build included;
# the per-step limits below only stop a hung step. The figures of a real run go in README.md.
#
# Environment:
#   PYTHON                the interpreter with the CUDA torch (default python3); .venv is made from
#                         it with --system-site-packages, and when it runs in a venv of its own
#                         (/opt/torch/.venv/bin/python3) that venv's packages are linked into .venv
#                         (a .pth file: --system-site-packages alone would see only the base Python's)
#   VOXSEG_CACHE          install.sh's cache (default ~/.cache/voxseg): sdist/ (the MinkowskiEngine
#                         sdist), wheels/KEY/ (the built wheel), debs-root/ (the unpacked .deb files)
#   VOXSEG_WHEELS         a folder of wheels brought along (default .whl/ in the repository): when it
#                         holds any, pip uses only those (PIP_NO_INDEX=1, PIP_FIND_LINKS)
#   VOXSEG_DEBS           a folder of .deb files brought along (default .debs/): unpacked with
#                         `dpkg -x` into $VOXSEG_CACHE/debs-root (never into /), found by the build
#                         and the programs through CPATH, LIBRARY_PATH, LD_LIBRARY_PATH and PATH,
#                         and not apt-get installed (install.sh's VOXSEG_DEB_ROOT). The .venv
#                         built so needs LD_LIBRARY_PATH to include those folders afterwards too
#                         (MinkowskiEngine links libopenblas.so.0)
#   VOXSEG_KITTI_REAL     a folder of real KITTI .bin scans for the benchmarks
#   VOXSEG_GPU_CHECK_OUT  the check's folder (default runs/gpu_check; its data/ is reused)
#   MAX_JOBS              compile jobs of the MinkowskiEngine build (default: all cores)
#   TORCH_CUDA_ARCH_LIST, CUDA_HOME   as install.sh reads them
#
# Brought along to a machine with no package index and no apt registry (README.md, "GPU check"):
# the wheels of voxseg's dependencies the image lacks (and setuptools, wheel) in .whl/; the .deb
# files of the Debian packages install.sh needs that the image lacks (OpenBLAS: libopenblas-dev
# libopenblas0 libopenblas0-pthread libopenblas-pthread-dev; ninja-build; libusb-1.0-0) in .debs/;
# the MinkowskiEngine 0.5.4 sdist in $VOXSEG_CACHE/sdist/. A CUDA MinkowskiEngine wheel built
# elsewhere for the same key (printed in the summary: MinkowskiEngine, torch and Python versions,
# CUDA version and archs, patch hash) can be put in $VOXSEG_CACHE/wheels/KEY/; it is then reused.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
PY="$ROOT/.venv/bin/python"
CACHE="${VOXSEG_CACHE:-$HOME/.cache/voxseg}"
WHEELS="${VOXSEG_WHEELS:-$ROOT/.whl}"
DEBS="${VOXSEG_DEBS:-$ROOT/.debs}"
OUT="${VOXSEG_GPU_CHECK_OUT:-$ROOT/runs/gpu_check}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac  # the steps run in the repository root
LOGS="$OUT/logs"
RESULTS="$OUT/results.tsv"
INFO="$OUT/info.tsv"
DATA="$OUT/data"
BUDGET_S=540
VOXEL=0.05
STEP_PID=""
DATA_PID=""

# The runs' settings: the synthetic recipes at 0.05 m on the GPU, sized for seconds.
FINETUNE_ARGS=(--config configs/finetune/synthetic_minkunet14a.yaml "data.root=$DATA" "data.train.sequences=[0]"
  "data.val.sequences=[4]" "model.backbone.voxel_size=$VOXEL" train.device=cuda train.batch_size=2
  train.num_workers=4 train.threads=0 train.val_max_scans=2 train.checkpoint_every=0 train.progress=false)
PRETRAIN_ARGS=(--config configs/pretrain/synthetic_minkunet14a_iscc.yaml "data.root=$DATA" "data.train.sequences=[0]"
  "data.train.group_params={stacking: {window: 4, stride: 2}}" "model.backbone.voxel_size=$VOXEL"
  train.device=cuda train.batch_size=2 train.num_workers=4 train.threads=0 train.checkpoint_every=0
  train.progress=false)

say() { printf '[gpu-check] %s\n' "$*"; }
now_ms() { local t="${EPOCHREALTIME//[!0-9]/}"; echo $((10#$t / 1000)); }  # (any decimal separator)
info() { printf '%s\t%s\n' "$1" "$2" >> "$INFO"; }
passed() { grep -q "^$1"$'\t'"pass"$'\t' "$RESULTS" 2>/dev/null; }

# --- is there a CUDA GPU? (nothing written, no venv touched) ----------------------------------------

detect_gpu() {  # sets GPU_LINE, GPU_COUNT, TORCH_LINE, ARCHS; or NO_GPU (why) and returns 1
  local smi probe err
  NO_GPU=""
  if ! command -v nvidia-smi >/dev/null 2>&1; then NO_GPU="nvidia-smi not found"; return 1; fi
  if ! smi="$(timeout 60 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)" \
      || [ -z "$smi" ]; then
    NO_GPU="nvidia-smi sees none: $(head -1 <<<"${smi:-no output}")"; return 1
  fi
  GPU_LINE="$(head -1 <<<"$smi")"
  if ! command -v "$PYTHON" >/dev/null 2>&1; then NO_GPU="no $PYTHON to run torch"; return 1; fi
  # shellcheck disable=SC2016  # Python, not shell
  if ! probe="$(timeout 120 "$PYTHON" -c 'import torch
n = torch.cuda.device_count() if torch.version.cuda and torch.cuda.is_available() else 0
caps = sorted({torch.cuda.get_device_capability(i) for i in range(n)})
print(torch.__version__, torch.version.cuda or "", n, ";".join(f"{a}.{b}" for a, b in caps), sep="|")' 2>/dev/null)"; then
    err="$("$PYTHON" -c 'import torch' 2>&1 | tail -1)"
    NO_GPU="$PYTHON cannot import torch${err:+: $err}"; return 1
  fi
  local version cuda
  IFS='|' read -r version cuda GPU_COUNT ARCHS <<<"$probe"  # (not tabs: IFS whitespace drops empty fields)
  if [ -z "$cuda" ]; then NO_GPU="$PYTHON's torch $version is a CPU build"; return 1; fi
  if [ "${GPU_COUNT:-0}" -lt 1 ]; then NO_GPU="$PYTHON's torch $version (CUDA $cuda) sees no CUDA device"; return 1; fi
  TORCH_LINE="$version (CUDA $cuda), $GPU_COUNT GPU(s) visible, arch $ARCHS"
}

# --- what was brought along --------------------------------------------------------------------

use_brought_wheels() {  # a folder holding wheels: pip takes everything from it, nothing from an index
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELS"
    info wheels "pip takes only the wheels in $WHEELS (no index)"
    say "pip: no index, only the $(compgen -G "$WHEELS/*.whl" | wc -l) wheels in $WHEELS"
  fi
}

prepend() {  # VAR DIR...: the DIRs that exist, in this order, in front of the colon-separated list in VAR
  local var="$1" dir front=""; shift
  for dir in "$@"; do
    if [ -d "$dir" ]; then front="${front:+$front:}$dir"; fi
  done
  if [ -n "$front" ]; then export "$var=$front${!var:+:${!var}}"; fi
}

unpack_debs() {  # the .deb files of $DEBS, unpacked into $CACHE/debs-root, and the paths to them
  local debs root="$CACHE/debs-root" deb dir multiarch libs=() includes=()
  compgen -G "$DEBS/*.deb" >/dev/null || return 0
  mapfile -t debs < <(compgen -G "$DEBS/*.deb")
  mkdir -p "$root" || return 1
  for deb in "${debs[@]}"; do
    dpkg -x "$deb" "$root" || { say "cannot unpack $deb into $root"; return 1; }
  done
  export VOXSEG_DEB_ROOT="$root"  # install.sh: packages unpacked there are not apt-get installed
  multiarch="$(uname -m)-linux-gnu"
  # dpkg -x runs no maintainer scripts, so the alternatives' links (libopenblas.so, cblas.h in
  # the plain folders) are missing: the variant folders (openblas-pthread, ...) go on the paths too
  for dir in "$root/usr/lib/$multiarch"/openblas-* "$root/usr/lib/$multiarch" "$root/lib/$multiarch"; do
    libs+=("$dir")
  done
  for dir in "$root/usr/include/$multiarch"/openblas-* "$root/usr/include/$multiarch" "$root/usr/include"; do
    includes+=("$dir")
  done
  prepend CPATH "${includes[@]}"
  prepend LIBRARY_PATH "${libs[@]}"
  prepend LD_LIBRARY_PATH "${libs[@]}"
  prepend PATH "$root/usr/bin"
  info debs "${#debs[@]} .deb files of $DEBS unpacked into $root"
  say "${#debs[@]} .deb files from $DEBS unpacked into $root"
}

link_interpreter_venv() {  # $PYTHON in a venv of its own: .venv made from it, seeing that venv's torch
  # A venv made with --system-site-packages from a venv's Python (/opt/torch/.venv/bin/python3) sees
  # the base installation's packages, not that venv's: a .pth file in .venv adds its site-packages,
  # so that install.sh (VOXSEG_SYSTEM_TORCH=1) finds and keeps its CUDA torch.
  local paths prefix base purelib platlib site
  # shellcheck disable=SC2016  # Python, not shell
  paths="$("$PYTHON" -c 'import sys, sysconfig
print(sys.prefix, sys.base_prefix, sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), sep="\n")')" \
    || return 1
  { read -r prefix; read -r base; read -r purelib; read -r platlib; } <<<"$paths"
  [ "$prefix" != "$base" ] || return 0  # a Python installation itself: --system-site-packages sees it
  if [ ! -x "$PY" ]; then
    say "creating $ROOT/.venv from $PYTHON (--system-site-packages)"
    # (a Python without ensurepip: a venv without pip, which then runs the pip of $PYTHON's venv)
    "$PYTHON" -m venv --system-site-packages "$ROOT/.venv" \
      || "$PYTHON" -m venv --system-site-packages --without-pip "$ROOT/.venv" || return 1
  fi
  # a .venv made otherwise (a CPU `make install`) is left alone: install.sh says to remove it
  grep -qiE '^include-system-site-packages *= *true' "$ROOT/.venv/pyvenv.cfg" || return 0
  site="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || return 1
  printf '%s\n' "$purelib" "$platlib" | sort -u > "$site/voxseg-interpreter-venv.pth" || return 1
  info venv "$ROOT/.venv sees the packages of $prefix (voxseg-interpreter-venv.pth)"
  "$PY" -m pip --version >/dev/null 2>&1 || say "no pip in $ROOT/.venv nor in $prefix: install will fail"
}

me_wheel_key() {  # the install's cache key for the CUDA MinkowskiEngine wheel, and whether it is cached
  local archs="${TORCH_CUDA_ARCH_LIST:-$ARCHS}" key
  key="$("$PYTHON" "$ROOT/tools/install/patch_minkowski.py" cache-key --cuda "$archs" 2>/dev/null)" || return 0
  if compgen -G "$CACHE/wheels/$key/*.whl" >/dev/null; then
    info me_wheel "$key (in the cache: reused unless installed already)"
  else
    info me_wheel "$key (not in $CACHE/wheels: built by install)"
  fi
}

# --- steps ---------------------------------------------------------------------------------------

stop_step() { [ -n "$STEP_PID" ] && kill -TERM "$STEP_PID" 2>/dev/null; }

run_step() {  # NAME LIMIT_S CMD...: CMD in the repository root, output to LOGS/NAME.log; records the result
  local name="$1" limit="$2" start rc status note=""
  shift 2
  say "$name: running ($LOGS/$name.log)"
  start="$(now_ms)"
  # timeout: a hung step ends (with its whole process group: DataLoader workers, torchrun's children)
  (cd "$ROOT" && exec timeout --kill-after=15 "$limit" "$@") >"$LOGS/$name.log" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID"
  rc=$?
  STEP_PID=""
  status=pass
  if [ "$rc" -ne 0 ]; then
    status=FAIL
    note="exit status $rc"
    [ "$rc" -eq 124 ] && note="timed out after $limit s"
  fi
  local ms=$(( $(now_ms) - start ))
  printf '%s\t%s\t%d.%03d\t%s\t%s\n' "$name" "$status" $((ms / 1000)) $((ms % 1000)) "$rc" "$note" >> "$RESULTS"
  say "$name: $status ($((ms / 1000)) s)"
  [ "$status" = pass ]
}

skip_step() {  # NAME WHY
  printf '%s\tSKIP\t0\t\t%s\n' "$1" "$2" >> "$RESULTS"
  say "$1: skipped ($2)"
}

data_job() {  # synthetic scans, then their ISCC groups (CPU only: runs beside the cuda tests)
  trap 'stop_step; exit 130' INT TERM
  if run_step synthetic 300 "$PY" tools/make_synthetic.py --out "$DATA" --sequences 00=8 04=2 --workers 2; then
    run_step preprocess 300 "$PY" tools/preprocess.py --dataset "$DATA" --sequences 00 --workers 4 --no-progress \
      stacking.window=4 stacking.stride=2
  else
    skip_step preprocess "no synthetic data"
  fi
}

benchmark_scan() {  # sets SCAN: the first real KITTI scan, else the first synthetic one (or empty)
  local real="${VOXSEG_KITTI_REAL:-$ROOT/../shared/data/kitti_real}" first
  first="$(compgen -G "$real/*.bin" | sort | head -1)"
  if [ -n "$first" ]; then
    SCAN="$first"
    info scans "real KITTI scans in $real"
  elif passed synthetic; then
    SCAN="$DATA/sequences/00/velodyne/000000.bin"
    info scans "synthetic scans of $DATA/sequences/00 (no real KITTI scans: set VOXSEG_KITTI_REAL)"
  else
    SCAN=""
  fi
}

run_checks() {
  if ! run_step install 480 env VOXSEG_SYSTEM_TORCH=1 VOXSEG_ME_CUDA=1 PYTHON="$PYTHON" bash tools/install/install.sh
  then
    local step
    for step in cuda-tests synthetic preprocess bench-scan bench-batch8 finetune ddp-nccl pretrain; do
      skip_step "$step" "install failed"
    done
    return
  fi
  data_job &
  DATA_PID=$!
  run_step cuda-tests 360 "$PY" -m pytest -m cuda tests -q -rs
  wait "$DATA_PID"
  DATA_PID=""

  benchmark_scan
  if [ -n "$SCAN" ]; then
    run_step bench-scan 300 "$PY" benchmarks/backbone.py --voxel-sizes "$VOXEL" --scan "$SCAN"
    run_step bench-batch8 300 "$PY" benchmarks/backbone.py --batch 8 --voxel-sizes "$VOXEL" --scan "$SCAN"
  else
    skip_step bench-scan "no real KITTI scans and no synthetic data"
    skip_step bench-batch8 "no real KITTI scans and no synthetic data"
  fi

  if passed synthetic; then
    run_step finetune 300 "$PY" tools/finetune.py "${FINETUNE_ARGS[@]}" train.max_steps=20 train.warmup_steps=5 \
      train.val_every=20 "output_dir=$OUT/finetune"
    local nproc=$(( GPU_COUNT < 2 ? GPU_COUNT : 2 ))
    run_step ddp-nccl 240 "$PY" -m torch.distributed.run --standalone --nproc_per_node "$nproc" \
      tools/gpu_check_ddp.py "${FINETUNE_ARGS[@]}" train.max_steps=2 train.warmup_steps=1 train.val_every=2 \
      "output_dir=$OUT/ddp"
  else
    skip_step finetune "no synthetic data"
    skip_step ddp-nccl "no synthetic data"
  fi
  if passed preprocess; then
    run_step pretrain 300 "$PY" tools/pretrain.py "${PRETRAIN_ARGS[@]}" train.max_steps=10 train.warmup_steps=2 \
      "output_dir=$OUT/pretrain"
  else
    skip_step pretrain "no ISCC groups (preprocess did not pass)"
  fi
}

on_exit() {
  stop_step
  [ -n "$DATA_PID" ] && kill -TERM "$DATA_PID" 2>/dev/null
}

main() {
  local start
  start="$(now_ms)"
  if ! detect_gpu; then
    echo "gpu-check: no CUDA GPU here ($NO_GPU); nothing to check"
    return 0
  fi
  trap on_exit EXIT
  trap 'exit 130' INT TERM
  rm -rf "$LOGS" "$OUT/finetune" "$OUT/ddp" "$OUT/pretrain" "$RESULTS" "$INFO"
  mkdir -p "$LOGS" || return 1
  : > "$RESULTS"
  export MAX_JOBS="${MAX_JOBS:-$(nproc)}" PIP_DISABLE_PIP_VERSION_CHECK=1
  say "GPU: $GPU_LINE; torch $TORCH_LINE; $(nproc) cores"
  info gpu "$GPU_LINE; $(nproc) cores"
  info torch "$TORCH_LINE"
  local nvcc
  nvcc="${CUDA_HOME:+$CUDA_HOME/bin/}nvcc"
  command -v "$nvcc" >/dev/null 2>&1 || nvcc=/usr/local/cuda/bin/nvcc
  info nvcc "$("$nvcc" --version 2>/dev/null | sed -n 's/.*\(release [0-9.]*\).*/\1/p' | head -1)"
  use_brought_wheels
  unpack_debs || say "the .deb files could not all be unpacked: install may apt-get them"
  link_interpreter_venv || say "could not link $PYTHON's venv into .venv: install may not find its torch"
  me_wheel_key
  run_checks
  info total_seconds "$(( ($(now_ms) - start) / 1000 ))"
  "$PYTHON" "$ROOT/tools/gpu_check_summary.py" "$OUT" --budget "$BUDGET_S"
}

# Run unless sourced (tests/test_gpu_check.py sources it to call its functions).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
