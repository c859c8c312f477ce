"""Patch MinkowskiEngine 0.5.4's source tree so it builds and imports on today's toolchain.

Usage:
  python patch_minkowski.py SOURCE_DIR [--cuda]   patch an unpacked sdist (--cuda: CUDA edits too)
  python patch_minkowski.py fetch DIR             put the checked sdist in DIR and print its path
  python patch_minkowski.py cache-key [--cuda ARCH_LIST]
                                                  print the cache key of a wheel built here
(install.sh and the Dockerfile use all three.)

Every edit is a plain text substitution that is skipped when already applied, so running the
script twice is harmless. It exits with an error naming the file when an anchor is missing,
which means the source is not the 0.5.4 sdist this script was written for.

Always applied:
  * Python >= 3.10 removed `collections.Sequence`; five modules import it from there.
  * setup.py runs `pip uninstall MinkowskiEngine -y` with whatever pip is first on PATH, which
    can remove a user's other install; building a wheel needs no uninstall.
With --cuda, for the CUDA extension on CUDA 12 and 13 toolkits and torch 2.x (MinkowskiEngine
issues #543, #594, #596, #601, #614, #621, #638; PR #626):
  * CCCL/thrust 2.x no longer includes its algorithm headers (nor `thrust::device`) transitively,
    so each file that calls a thrust algorithm includes its header explicitly.
  * NVTX: the sdist already includes `<nvtx3/nvToolsExt.h>` and links no nvToolsExt library, but
    its bundled pre-release cudf `nvtx3.hpp` clashes with the official nvtx3.hpp that CUB includes
    ("nvtx3::domain is ambiguous"); its single use, one profiling range, is dropped.
  * `shared_ptr = unique_ptr` with libstdc++ finds both `std::__to_address` and CCCL's
    `cuda::std::__to_address` by ADL (#596); the map's shared_ptr is built from the raw pointer.
  * torch's ATen/cuda/CUDAUtils.h uses at::Tensor without including it; spmm.cu includes it first.
  * `thrust::unary_function` is deprecated in CCCL 2.x (removed in 3.0); its one use only added
    typedefs that nothing reads.
  * CUDA 13 moved CCCL's headers (thrust, cub, libcu++) to $CUDA_HOME/include/cccl, which nvcc
    searches and g++ does not ("thrust/host_vector.h: No such file" from the host .cpp files);
    setup.py adds that directory to the include path when it exists.
  * CUDA 13's cudaMemPrefetchAsync takes a cudaMemLocation and a flags argument in place of the
    device number; concurrent_unordered_map.cuh calls it through a helper that picks the
    signature by CUDART_VERSION.
  * gpu.cu's getCurrentCUDASparseHandle() created a new cuSPARSE handle on every call (each conv,
    pooling and broadcast launch) and never destroyed one; it now creates one per device and host
    thread and returns that (its callers set the stream on it, as before). Per thread because a
    cuSPARSE handle must not be used by two host threads at once (autograd runs a thread per GPU).
The first two CUDA 13 edits are the two failures of a real build (CUDA 13.0, torch 2.11.0+cu130,
GCC 13.3, Python 3.12): with them the 0.5.4 sdist built for sm_90 in about 190 s. The cuSPARSE
edit came after that build; tests/test_install.py compiles the prefetch helper with the nvcc it
finds, nothing here compiles gpu.cu.

`fetch` takes the sdist through pip's configured index (index-url, extra-index-url, proxy, cert,
trusted-host and credentials, from pip.conf and PIP_* variables, as `pip download` would), with
pip's own finder and session, and checks its sha256. Not `pip download` itself: pip prepares an
sdist's metadata before saving it (pypa/pip#1884), which runs this setup.py, and that needs torch,
runs `pip uninstall MinkowskiEngine -y` and, without --blas, numpy.distutils (gone from numpy 2).
A verified copy already in DIR is reused without any network access.

`cache-key` names a built wheel by everything that changes it: the MinkowskiEngine, torch (the
installed one, local version included) and Python versions, CPU or CUDA (torch.version.cuda and
the arch list), and the sha256 of this script, so that an edited patch builds a new wheel.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

ME_VERSION = "0.5.4"
ME_SDIST = f"MinkowskiEngine-{ME_VERSION}.tar.gz"
ME_SHA256 = "b1879c00d0b0b1d30ba622cce239886a7e3c78ee9da1064cdfe2f64c2ab15f94"

SEQUENCE_MODULES = [
    "MinkowskiEngine/MinkowskiCommon.py",
    "MinkowskiEngine/MinkowskiCoordinateManager.py",
    "MinkowskiEngine/MinkowskiKernelGenerator.py",
    "MinkowskiEngine/MinkowskiTensorField.py",
    "MinkowskiEngine/utils/quantization.py",
]

# (file, old text, new text): applied when `old` is present and `new` is not.
COMMON_EDITS = [
    *[(m, "from collections import Sequence, namedtuple",
       "from collections import namedtuple\nfrom collections.abc import Sequence")
      for m in SEQUENCE_MODULES if m.endswith("KernelGenerator.py")],
    *[(m, "from collections import Sequence\n", "from collections.abc import Sequence\n")
      for m in SEQUENCE_MODULES if not m.endswith("KernelGenerator.py")],
    ("setup.py", 'run_command("pip", "uninstall", "MinkowskiEngine", "-y")\n',
     "# (voxseg patch) no `pip uninstall` during the build\n"),
]


def _includes_after(rel: str, anchor: str, *headers: str) -> tuple[str, str, str]:
    """An edit that adds `#include <h>` lines for `headers` below the line `#include <anchor>`
    (`#include "anchor"` when `anchor` is given in quotes)."""
    line = f"#include {anchor}\n" if anchor.startswith('"') else f"#include <{anchor}>\n"
    return rel, line, line + "".join(f"#include <{h}>\n" for h in headers)


CUDA_EDITS = [
    # CCCL/thrust 2.x: include what is used ("thrust has no member device/remove_if/sort_by_key").
    _includes_after("src/3rdparty/concurrent_unordered_map.cuh", "thrust/count.h",
                    "thrust/execution_policy.h"),
    _includes_after("src/coordinate_map_gpu.cu", "thrust/sort.h",
                    "thrust/for_each.h", "thrust/iterator/zip_iterator.h", "thrust/remove.h",
                    "thrust/scan.h", "thrust/sequence.h", "thrust/transform.h", "thrust/unique.h"),
    _includes_after("src/kernel_map.cuh", "thrust/sort.h",
                    "thrust/iterator/zip_iterator.h", "thrust/reduce.h"),
    _includes_after("src/pooling_max_kernel.cu", "thrust/sort.h", "thrust/sequence.h"),
    _includes_after("src/broadcast_kernel.cu", '"math_functions.cuh"',
                    "thrust/execution_policy.h", "thrust/sort.h"),
    _includes_after("src/coordinate_map_functors.cuh", "thrust/pair.h", "thrust/tuple.h"),
    _includes_after("src/spmm.cu", "torch/script.h",
                    "thrust/execution_policy.h", "thrust/iterator/zip_iterator.h",
                    "thrust/reduce.h", "thrust/sort.h", "thrust/tuple.h"),
    # NVTX: drop cudf's bundled nvtx3.hpp (clashes with the one CUB includes) and its one range.
    ("src/3rdparty/concurrent_unordered_map.cuh", "#include <cudf/detail/nvtx/ranges.hpp>\n",
     "// (voxseg patch) no ranges.hpp: cudf's bundled nvtx3.hpp clashes with CUDA 12's\n"),
    ("src/3rdparty/concurrent_unordered_map.cuh", "    CUDF_FUNC_RANGE();\n",
     "    // (voxseg patch) CUDF_FUNC_RANGE() dropped with the bundled NVTX\n"),
    # std::__to_address is ambiguous with CCCL's under ADL (#596): no shared_ptr from a unique_ptr.
    ("src/coordinate_map_gpu.cuh",
     "      m_map = map_type::create(\n"
     "          compute_hash_table_size(size, m_hashtable_occupancy),\n"
     "          m_unused_element, m_unused_key, m_hasher, m_equal, m_map_allocator);\n",
     "      auto map_uptr = map_type::create(\n"
     "          compute_hash_table_size(size, m_hashtable_occupancy),\n"
     "          m_unused_element, m_unused_key, m_hasher, m_equal, m_map_allocator);\n"
     "      auto map_deleter = map_uptr.get_deleter();\n"
     "      m_map = std::shared_ptr<map_type>(map_uptr.release(), map_deleter);\n"),
    # torch 2.x: ATen/cuda/CUDAUtils.h needs at::Tensor complete ("incomplete type at::Tensor").
    ("src/spmm.cu", "#include <ATen/cuda/CUDAContext.h>\n",
     "#include <ATen/core/Tensor.h>\n#include <ATen/cuda/CUDAContext.h>\n"),
    # thrust::unary_function: deprecated in CCCL 2.x, gone in 3.0; the functor needs no base.
    ("src/coordinate_map_functors.cuh",
     "struct find_coordinate\n"
     "    : public thrust::unary_function<uint32_t,\n"
     "                                    thrust::pair<uint32_t, uint32_t>> {\n",
     "struct find_coordinate {  // (voxseg patch) no thrust::unary_function base\n"),
    # CUDA 13: CCCL lives in $CUDA_HOME/include/cccl, which g++ (the host .cpp files) must be told.
    ("setup.py", '    libraries.append("cusparse")\n',
     '    libraries.append("cusparse")\n'
     "    # (voxseg patch) CUDA 13 keeps CCCL in include/cccl: nvcc searches it, g++ does not\n"
     "    from torch.utils.cpp_extension import CUDA_HOME as TORCH_CUDA_HOME\n"
     "\n"
     "    CCCL_DIR = os.path.join(CUDA_HOME or TORCH_CUDA_HOME or \"\", \"include\", \"cccl\")\n"
     "    if (CUDA_HOME or TORCH_CUDA_HOME) and os.path.isdir(CCCL_DIR):\n"
     "        include_dirs.append(CCCL_DIR)\n"),
    # CUDA 13: cudaMemPrefetchAsync(ptr, count, cudaMemLocation, flags, stream); a helper for both.
    ("src/3rdparty/concurrent_unordered_map.cuh", "#include <type_traits>\n",
     "#include <type_traits>\n"
     "\n"
     "// (voxseg patch) CUDA 13's cudaMemPrefetchAsync takes a cudaMemLocation and flags\n"
     "#include <cuda_runtime_api.h>\n"
     "inline cudaError_t voxseg_prefetch_async(const void* ptr, size_t count, int dev_id,\n"
     "                                         cudaStream_t stream)\n"
     "{\n"
     "#if CUDART_VERSION >= 13000\n"
     "  cudaMemLocation location{};\n"
     "  location.type = cudaMemLocationTypeDevice;\n"
     "  location.id   = dev_id;\n"
     "  return cudaMemPrefetchAsync(ptr, count, location, 0 /* flags */, stream);\n"
     "#else\n"
     "  return cudaMemPrefetchAsync(ptr, count, dev_id, stream);\n"
     "#endif\n"
     "}\n"),
    ("src/3rdparty/concurrent_unordered_map.cuh",
     "cudaMemPrefetchAsync(m_hashtbl_values, m_capacity * sizeof(value_type), dev_id, stream)",
     "voxseg_prefetch_async(m_hashtbl_values, m_capacity * sizeof(value_type), dev_id, stream)"),
    ("src/3rdparty/concurrent_unordered_map.cuh",
     "cudaMemPrefetchAsync(this, sizeof(*this), dev_id, stream)",
     "voxseg_prefetch_async(this, sizeof(*this), dev_id, stream)"),
    # One cuSPARSE handle per device and thread, not a new (leaked) handle on every call.
    ("src/gpu.cu",
     "cusparseHandle_t getCurrentCUDASparseHandle() {\n"
     "  cusparseHandle_t handle;\n"
     "  CUSPARSE_CHECK(cusparseCreate(&handle));\n"
     "  return handle;\n"
     "}\n",
     "// (voxseg patch) one handle per device and host thread, made on first use (it was a new\n"
     "// handle on every call, never destroyed); callers set its stream. Kept to the process's\n"
     "// end, as torch keeps its own: destroying one after the CUDA context has gone fails.\n"
     "cusparseHandle_t getCurrentCUDASparseHandle() {\n"
     "  int device = 0;\n"
     "  CUDA_CHECK(cudaGetDevice(&device));\n"
     "  thread_local std::vector<cusparseHandle_t> handles;\n"
     "  if (static_cast<size_t>(device) >= handles.size()) {\n"
     "    handles.resize(device + 1, nullptr);\n"
     "  }\n"
     "  if (handles[device] == nullptr) {\n"
     "    CUSPARSE_CHECK(cusparseCreate(&handles[device]));\n"
     "  }\n"
     "  return handles[device];\n"
     "}\n"),
]


def apply(source: Path, edits: list[tuple[str, str, str]]) -> None:
    for rel, old, new in edits:
        path = source / rel
        if not path.is_file():
            sys.exit(f"patch_minkowski: {path}: file not found (is this MinkowskiEngine 0.5.4?)")
        text = path.read_text()
        if new in text:
            continue  # already patched (an insertion's `new` still contains its `old`)
        if old not in text:
            sys.exit(f"patch_minkowski: {path}: expected text not found: {old.strip()!r}")
        path.write_text(text.replace(old, new))
        print(f"patched {rel}")


def fetch(dest: Path) -> Path:
    """The checked sdist in `dest`: a verified copy already there, else one downloaded through
    pip's configured index with pip's finder and session (see the module docstring)."""
    target = dest / ME_SDIST
    if target.is_file() and _sha256(target.read_bytes()) == ME_SHA256:
        return target
    try:
        from pip._internal.commands import create_command
        from pip._vendor.packaging.specifiers import SpecifierSet

        command = create_command("download")
        options, _ = command.parse_args(["--no-deps", "--no-binary", ":all:", "-d", str(dest)])
        with command.main_context():
            session = command.get_default_session(options)
            finder = command._build_package_finder(options=options, session=session)
            found = finder.find_best_candidate("MinkowskiEngine", SpecifierSet(f"=={ME_VERSION}"))
            best = found.best_candidate
            if best is None:
                index = " ".join([options.index_url, *options.extra_index_urls])
                sys.exit(f"patch_minkowski: download of {ME_SDIST} failed: pip's index ({index};"
                         " pip.conf or PIP_INDEX_URL sets it) could not be reached or has no such"
                         " file")
            url = best.link.url_without_fragment
            print(f"patch_minkowski: downloading {url}", file=sys.stderr)
            response = session.get(url, headers={"Accept-Encoding": "identity"}, stream=True)
            response.raise_for_status()
            data = b"".join(response.iter_content(1 << 20))
    except SystemExit:
        raise
    except Exception as error:  # network, HTTP and pip-internal errors alike: one line each
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        sys.exit(f"patch_minkowski: download of {ME_SDIST} through pip's index failed: {reason}")
    digest = _sha256(data)
    if digest != ME_SHA256:
        sys.exit(f"patch_minkowski: {url}: sha256 {digest}, expected {ME_SHA256} (not the "
                 f"MinkowskiEngine {ME_VERSION} sdist; a mirror serving another file?)")
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / f".{ME_SDIST}.{os.getpid()}.part"  # renamed: no truncated sdist is ever left
    partial.write_bytes(data)
    partial.replace(target)
    return target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_key(torch_version: str, python_tag: str, script: bytes,
              cuda_version: str | None = None, arch_list: str | None = None) -> str:
    """The wheel cache's directory name for one build: CPU when `cuda_version` is None."""
    if cuda_version is None:
        variant = "cpu"
    else:
        archs = "_".join(a for a in re.split(r"[;\s]+", arch_list or "") if a)
        if not archs:
            raise ValueError("a CUDA build's key needs its arch list (TORCH_CUDA_ARCH_LIST)")
        variant = f"cuda{cuda_version}-arch{archs}"
    key = (f"MinkowskiEngine-{ME_VERSION}-torch-{torch_version}-{python_tag}-{variant}"
           f"-patch-{_sha256(script)[:12]}")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", key)


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    if argv[0] == "fetch":
        if len(argv) != 2:
            sys.exit("usage: patch_minkowski.py fetch DIR")
        print(fetch(Path(argv[1])))
        return
    if argv[0] == "cache-key":
        if argv[1:] and (argv[1] != "--cuda" or len(argv) != 3):
            sys.exit("usage: patch_minkowski.py cache-key [--cuda ARCH_LIST]")
        import torch

        cuda = torch.version.cuda if argv[1:] else None
        if argv[1:] and cuda is None:
            sys.exit(f"patch_minkowski: cache-key --cuda: torch {torch.__version__} is a CPU build")
        python_tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
        print(cache_key(torch.__version__, python_tag, Path(__file__).read_bytes(), cuda,
                        argv[2] if argv[1:] else None))
        return
    source = Path(argv[0])
    apply(source, COMMON_EDITS)
    if "--cuda" in argv[1:]:
        apply(source, CUDA_EDITS)


if __name__ == "__main__":
    main(sys.argv[1:])
