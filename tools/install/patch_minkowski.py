"""Patch MinkowskiEngine 0.5.4's source tree so it builds and imports on today's toolchain.

Usage: python patch_minkowski.py SOURCE_DIR [--cuda]

Every edit is a plain text substitution that is skipped when already applied, so running the
script twice is harmless. It exits with an error naming the file when an anchor is missing,
which means the source is not the 0.5.4 sdist this script was written for.

Always applied:
  * Python >= 3.10 removed `collections.Sequence`; five modules import it from there.
  * setup.py runs `pip uninstall MinkowskiEngine -y` with whatever pip is first on PATH, which
    can remove a user's other install; building a wheel needs no uninstall.
With --cuda, for the CUDA extension on CUDA 12 toolkits and torch 2.x (MinkowskiEngine issues
#543, #594, #596, #601, #614, #621, #638; PR #626):
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
"""

from __future__ import annotations

import sys
from pathlib import Path

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


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    source = Path(argv[0])
    apply(source, COMMON_EDITS)
    if "--cuda" in argv[1:]:
        apply(source, CUDA_EDITS)


if __name__ == "__main__":
    main(sys.argv[1:])
