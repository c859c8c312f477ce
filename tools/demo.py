#!/usr/bin/env python3
"""The demo `make demo` runs: voxseg end to end on the synthetic sequences, on a CPU, in minutes.

    python tools/demo.py [--data data/synthetic] [--out runs/demo]

Each step is one of the command-line tools, printed before it runs, so the demo doubles as a
recipe to copy. Steps whose outputs exist are skipped (or resumed), so a second run, or a run
after Ctrl-C, picks up where the last one stopped:

  1. tools/make_synthetic.py  generate the dataset (sequences 00-03 train, 04 held out)
  2. tools/preprocess.py      stack frames, remove ground, group with HDBSCAN (ISCC supervision)
  3. tools/finetune.py        MinkUNet14A + semantic head on 00-03
  4. tools/infer.py           predict the held-out sequence 04 with the final checkpoint
  5. tools/evaluate.py        SemanticKITTI metrics on 04, printed as a per-class table
"""

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/finetune/synthetic_minkunet14a.yaml"
PREPROCESS_CONFIG = "configs/preprocess/default.yaml"
HELD_OUT = "04"


def step(title: str, args: list[str]) -> None:
    print(f"\n== {title}\n$ python {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=ROOT)
    if result.returncode:
        sys.exit(f"demo: step failed ({title}); rerun `make demo` to resume from here")
    print(f"({title}: {time.perf_counter() - start:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic", help="synthetic dataset root (generated when missing)")
    parser.add_argument("--out", default="runs/demo", help="where the demo's runs go")
    args = parser.parse_args()
    out = Path(args.out)
    start = time.perf_counter()

    step("generate the synthetic dataset", ["tools/make_synthetic.py", "--out", args.data])
    step("preprocess: stacking, ground removal, grouping",
         ["tools/preprocess.py", "--dataset", args.data, "--sequences", "00", "01", "02", "03", "04",
          "--config", PREPROCESS_CONFIG, "--out", str(out / "groups"), "--render", str(out / "groups_png"),
          "--workers", "2"])

    run_dir = out / "finetune"
    finetune = ["tools/finetune.py", "--config", CONFIG, f"output_dir={run_dir}", f"data.root={args.data}"]
    if (run_dir / "metrics.json").exists():
        print(f"\n== fine-tune: {run_dir}/metrics.json exists, skipping")
    else:
        resume = ["--resume"] if (run_dir / "checkpoints" / "last.pt").exists() else []
        step("fine-tune MinkUNet14A + semantic head", finetune + resume)

    predictions = out / "predictions"
    step(f"predict held-out sequence {HELD_OUT}",
         ["tools/infer.py", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), "--dataset", args.data,
          "--sequences", HELD_OUT, "--out", str(predictions)])
    metrics_file = out / f"metrics_{HELD_OUT}.json"
    step(f"evaluate on sequence {HELD_OUT}",
         ["tools/evaluate.py", "--gt-labels", f"{args.data}/sequences/{HELD_OUT}/labels",
          "--pred-labels", str(predictions / "sequences" / HELD_OUT / "predictions"),
          "--label-config", "configs/labels/synthetic.yaml", "--out", str(metrics_file)])

    metrics = json.loads((ROOT / metrics_file).read_text())
    print(f"\ndemo done in {time.perf_counter() - start:.0f} s: mIoU {100 * metrics['miou']:.1f} on held-out "
          f"sequence {HELD_OUT} over {len(metrics['iou_per_class'])} classes ({metrics_file})")


if __name__ == "__main__":
    main()
