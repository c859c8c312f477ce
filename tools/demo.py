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
  6. the same for instances:  an ASIS model (MinkUNet14A + ASIS head) fine-tuned on 00-03, its
                              panoptic predictions of 04, PQ (--task panoptic) and AP (--task instance)
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
ASIS_CONFIG = "configs/finetune/synthetic_minkunet14a_asis.yaml"
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

    semantic = train_predict_evaluate(out / "finetune", CONFIG, "MinkUNet14A + semantic head", args.data,
                                      out / "predictions", ["semantic"])
    instance = train_predict_evaluate(out / "finetune_asis", ASIS_CONFIG, "MinkUNet14A + ASIS head", args.data,
                                      out / "predictions_asis", ["panoptic", "instance"])
    print(f"\ndemo done in {time.perf_counter() - start:.0f} s, on held-out sequence {HELD_OUT}:\n"
          f"  semantic: mIoU {100 * semantic['semantic']['miou']:.1f} over "
          f"{len(semantic['semantic']['iou_per_class'])} classes\n"
          f"  ASIS:     PQ {100 * instance['panoptic']['pq']:.1f}, AP50 {100 * instance['instance']['ap50']:.1f}, "
          f"mIoU {100 * instance['panoptic']['miou']:.1f}\n"
          f"  metrics in {out}/metrics_*.json")


def train_predict_evaluate(run_dir: Path, config: str, title: str, data: str, predictions: Path,
                           tasks: list[str]) -> dict:
    """Fine-tune (or resume, or skip when done), predict the held-out sequence, evaluate each task."""
    if (run_dir / "metrics.json").exists():
        print(f"\n== fine-tune: {run_dir}/metrics.json exists, skipping")
    else:
        resume = ["--resume"] if (run_dir / "checkpoints" / "last.pt").exists() else []
        step(f"fine-tune {title}",
             ["tools/finetune.py", "--config", config, f"output_dir={run_dir}", f"data.root={data}", *resume])
    step(f"predict held-out sequence {HELD_OUT} ({title})",
         ["tools/infer.py", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), "--dataset", data,
          "--sequences", HELD_OUT, "--out", str(predictions)])
    results = {}
    for task in tasks:
        metrics_file = run_dir.parent / f"metrics_{run_dir.name}_{task}_{HELD_OUT}.json"
        step(f"evaluate {task} on sequence {HELD_OUT}",
             ["tools/evaluate.py", "--task", task, "--gt-labels", f"{data}/sequences/{HELD_OUT}/labels",
              "--pred-labels", str(predictions / "sequences" / HELD_OUT / "predictions"),
              "--label-config", "configs/labels/synthetic.yaml", "--out", str(metrics_file)])
        results[task] = json.loads((ROOT / metrics_file).read_text())
    return results


if __name__ == "__main__":
    main()
