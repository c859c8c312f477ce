#!/usr/bin/env python3
"""Generate the synthetic SemanticKITTI-format LiDAR dataset (voxseg's embedded default data).

    python tools/make_synthetic.py --out data/synthetic                 # the default dataset
    python tools/make_synthetic.py --out /tmp/tiny --sequences 00=20 --seed 3

Resumes an interrupted run; refuses to mix settings with an existing dataset.
"""

import argparse
import time

from voxseg.cli import exit_on_interrupt, main_guard

with exit_on_interrupt():
    from voxseg.errors import VoxsegError
    from voxseg.synthetic import SyntheticSpec, generate_dataset


def parse_sequences(items: list[str]) -> dict[str, int]:
    sequences = {}
    for item in items:
        name, sep, frames = item.partition("=")
        if not sep or not name.isdigit() or not frames.isdigit() or int(frames) < 1:
            raise VoxsegError(f"--sequences: expected NN=FRAMES such as 00=50, got {item!r}")
        sequences[f"{int(name):02d}"] = int(frames)
    return sequences


@main_guard
def main() -> None:
    default = SyntheticSpec()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="dataset root to write (ROOT/sequences/NN/...)")
    parser.add_argument("--sequences", nargs="+", metavar="NN=FRAMES",
                        default=[f"{k}={v}" for k, v in default.sequences.items()],
                        help="sequences and their scan counts (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--azimuth-steps", type=int, default=default.azimuth_steps,
                        help="columns per revolution (KITTI: about 2,000)")
    args = parser.parse_args()
    spec = SyntheticSpec(parse_sequences(args.sequences), args.seed, args.azimuth_steps)
    start = time.perf_counter()
    root = generate_dataset(args.out, spec)
    print(f"synthetic dataset in {root}: {sum(spec.sequences.values())} scans in {len(spec.sequences)} sequences "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
