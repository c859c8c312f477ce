#!/usr/bin/env python3
"""The demo `make demo` runs: voxseg end to end on the synthetic sequences, on a CPU, in minutes.

    python tools/demo.py [--data data/synthetic] [--out runs/demo]

Each step is one of the command-line tools, printed before it runs, so the demo doubles as a
recipe to copy. After the data, two lanes run side by side, one per core (each tool on one
thread: voxseg.lanes); each step's output goes to OUT/logs/, progress is printed every minute,
and the demo ends with where the time went. Steps whose outputs exist are skipped (or resumed),
so a second run, or a run after Ctrl-C, picks up where the last one stopped. Sized for minutes
on 2 cores: 40 pretraining steps, and the fine-tunings validated once, at the end, on every 5th
scan of 04 (their metrics.json); the reported figures are tools/evaluate.py's on all of 04.

  1. tools/make_synthetic.py  generate the dataset (sequences 00-03 train, 04 held out)
  semantic lane:
  2. tools/preprocess.py      stack frames, remove ground, group with HDBSCAN (ISCC supervision)
  3. tools/pretrain.py        ISCC self-supervised pretraining of MinkUNet14A on 00-03's groups
                              (a short run: the label-efficiency benchmark measures what it buys)
  4. tools/finetune.py        MinkUNet14A + semantic head on 00-03, from the pretrained encoder
  5. tools/infer.py           predict the held-out sequence 04 with the final checkpoint
  6. tools/evaluate.py        SemanticKITTI metrics on 04, printed as a per-class table, and its
                              charts (--plots: per-class IoU, confusion matrix)
  instance lane:
  7. the same for instances:  an ASIS model (MinkUNet14A + ASIS head) fine-tuned on 00-03, its
                              panoptic predictions of 04, PQ (--task panoptic) and AP (--task instance)
  8. tools/render.py          pictures of the ASIS model's predictions of 04: four scans (classes,
                              instances, ground truth, errors) and a sheet of the whole sequence
"""

import argparse
import json
from pathlib import Path

from voxseg.cli import main_guard
from voxseg.lanes import Lanes, StepFailed

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/finetune/synthetic_minkunet14a.yaml"
ASIS_CONFIG = "configs/finetune/synthetic_minkunet14a_asis.yaml"
PREPROCESS_CONFIG = "configs/preprocess/default.yaml"
PRETRAIN_CONFIG = "configs/pretrain/synthetic_minkunet14a_iscc.yaml"
PRETRAIN_STEPS = 40  # a demo of the pipeline, not of its gain (benchmarks/label_efficiency.py)
# The fine-tunings validate once, at the end, on every 5th scan of 04 (metrics.json): tools/infer.py
# and tools/evaluate.py then score all of 04, the figures the demo reports.
FINETUNE_OVERRIDES = ["train.val_every=0", "data.val.frame_stride=5"]
HELD_OUT = "04"
LABELS = "configs/labels/synthetic.yaml"


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic", help="synthetic dataset root (generated when missing)")
    parser.add_argument("--out", default="runs/demo", help="where the demo's runs go")
    args = parser.parse_args()
    out = Path(args.out)
    lanes = Lanes(out / "logs", ROOT)

    def semantic_lane() -> dict:
        lanes.step("semantic", "preprocess: stacking, ground removal, grouping",
                   ["tools/preprocess.py", "--dataset", args.data, "--sequences", "00", "01", "02", "03", "04",
                    "--config", PREPROCESS_CONFIG, "--out", str(out / "groups"), "--render", str(out / "groups_png"),
                    "--workers", "1"])
        encoder = pretrain(lanes, out / "pretrain", args.data, out / "groups")
        return train_predict_evaluate(lanes, "semantic", out / "finetune", CONFIG, "MinkUNet14A + semantic head",
                                      args.data, out / "predictions", ["semantic"], pretrained=encoder, threads=1)

    def instance_lane() -> dict:
        result = train_predict_evaluate(lanes, "instance", out / "finetune_asis", ASIS_CONFIG,
                                        "MinkUNet14A + ASIS head", args.data, out / "predictions_asis",
                                        ["panoptic", "instance"], threads=0)  # (the other lane is done by then)
        lanes.step("instance", f"render the ASIS model's predictions of sequence {HELD_OUT}",
                   ["tools/render.py", "--predictions", str(out / "predictions_asis"), "--dataset", args.data,
                    "--sequences", HELD_OUT, "--label-config", LABELS, "--out", str(out / "renders"), "--sheet"])
        return result

    try:
        lanes.step("data", "generate the synthetic dataset", ["tools/make_synthetic.py", "--out", args.data])
        results = lanes.run({"semantic": semantic_lane, "instance": instance_lane})
    except StepFailed as exc:
        raise StepFailed(f"{exc}; rerun `make demo` to resume from there") from None
    semantic, instance = results["semantic"], results["instance"]
    print(f"\nwhere the time went (seconds since the start; steps of two lanes overlap):\n{lanes.summary()}")
    print(f"\ndemo done, on held-out sequence {HELD_OUT}:\n"
          f"  semantic (ISCC-pretrained encoder): mIoU {100 * semantic['semantic']['miou']:.1f} over "
          f"{len(semantic['semantic']['iou_per_class'])} classes\n"
          f"  ASIS:     PQ {100 * instance['panoptic']['pq']:.1f}, AP50 {100 * instance['instance']['ap50']:.1f}, "
          f"mIoU {100 * instance['panoptic']['miou']:.1f}\n"
          f"  metrics in {out}/metrics_*.json; pictures in {out}/renders/ and {out}/plots_finetune/; "
          f"logs in {out}/logs/")


def pretrain(lanes: Lanes, run_dir: Path, data: str, groups: Path) -> Path:
    """ISCC pretraining on the training sequences' groups (or resume, or skip when done)."""
    encoder = run_dir / "checkpoints" / "encoder.pt"
    if encoder.exists():
        lanes.print(f"[semantic] pretrain: {encoder} exists, skipping")
        return encoder
    resume = ["--resume"] if (run_dir / "checkpoints" / "last.pt").exists() else []
    lanes.step("semantic", "pretrain MinkUNet14A with ISCC (short)",
               ["tools/pretrain.py", "--config", PRETRAIN_CONFIG, f"output_dir={run_dir}", f"data.root={data}",
                f"data.train.groups_root={groups}", f"train.max_steps={PRETRAIN_STEPS}", "train.warmup_steps=5",
                *resume])
    return encoder


def train_predict_evaluate(lanes: Lanes, lane: str, run_dir: Path, config: str, title: str, data: str,
                           predictions: Path, tasks: list[str], pretrained: Path | None = None,
                           threads: int = 0) -> dict:
    """Fine-tune (or resume, or skip when done), predict the held-out sequence, evaluate each task."""
    if (run_dir / "metrics.json").exists():
        lanes.print(f"[{lane}] fine-tune: {run_dir}/metrics.json exists, skipping")
    else:
        resume = ["--resume"] if (run_dir / "checkpoints" / "last.pt").exists() else []
        start = ["--pretrained", str(pretrained)] if pretrained is not None and not resume else []
        lanes.step(lane, f"fine-tune {title}" + (" from the pretrained encoder" if start else ""),
                   ["tools/finetune.py", "--config", config, f"output_dir={run_dir}", f"data.root={data}",
                    *FINETUNE_OVERRIDES, *resume, *start])
    lanes.step(lane, f"predict held-out sequence {HELD_OUT} ({title})",
               ["tools/infer.py", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), "--dataset", data,
                "--sequences", HELD_OUT, "--out", str(predictions), "--threads", str(threads)])
    results = {}
    for task in tasks:
        metrics_file = run_dir.parent / f"metrics_{run_dir.name}_{task}_{HELD_OUT}.json"
        plots = ["--plots", str(run_dir.parent / f"plots_{run_dir.name}")] if task == "semantic" else []
        lanes.step(lane, f"evaluate {task} on sequence {HELD_OUT}",
                   ["tools/evaluate.py", "--task", task, "--gt-labels", f"{data}/sequences/{HELD_OUT}/labels",
                    "--pred-labels", str(predictions / "sequences" / HELD_OUT / "predictions"),
                    "--label-config", LABELS, "--out", str(metrics_file), *plots], show=True)
        results[task] = json.loads((ROOT / metrics_file).read_text())
    return results


if __name__ == "__main__":
    main()
