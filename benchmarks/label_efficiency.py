#!/usr/bin/env python3
"""Label efficiency: fine-tuning from an ISCC-pretrained encoder against fine-tuning from scratch.

    python benchmarks/label_efficiency.py                         # the default: ~75 min on 2 CPU cores
    python benchmarks/label_efficiency.py --rows scratch iscc occ8 occ16 occ32 local global full100 full200
    python benchmarks/label_efficiency.py --rows ablation         # scratch, iscc and every ablation row
    python benchmarks/label_efficiency.py --device cuda --voxel-size 0.05 --pretrain-steps 5000 \\
        --finetune-steps 2000 --jobs 1                            # closer to the paper's setting, on a GPU
    python benchmarks/label_efficiency.py --data /data/kitti --train-sequences 00 01 02 03 04 05 06 07 09 10 \\
        --val-sequence 08 --label-config configs/labels/semantic-kitti.yaml   # any SemanticKITTI-format data

What is compared. For every label fraction (--fractions, percent of the training scans) and seed
(--seeds), MinkUNet14A + semantic head is fine-tuned with the semantic recipe
(configs/finetune/synthetic_minkunet14a.yaml, batch 1) once from a random initialisation ("No
Pre-training") and once from each pretrained encoder (`--pretrained OUT/pretrain_ROW/checkpoints/
encoder.pt`). Within a (fraction, seed) every run has the same config and overrides: the same
steps, the same labelled scans (finetune's select_subset draws them from the label fraction and
the seed alone; the benchmark asserts that the runs' label_subset.txt are identical), the same
initialisation of the head and the same order of batches; only the backbone's starting weights
differ. Each pretraining row is one run of tools/pretrain.py (configs/pretrain/
synthetic_minkunet14a_iscc.yaml, pretraining seed 0) on the training sequences, without labels;
"iscc" is the full method, and the ablation rows switch its loss terms as the header of
configs/_base_/models/minkunet14a_iscc.yaml lists them (occ8/16/32: occupancy only with K bins;
local, global: one contrastive term; full100/200: both contrastive terms without occupancy, M
prototypes). Preprocessing's groups (tools/preprocess.py, configs/preprocess/default.yaml) are made
first where the training sequences lack them.

Every run is a subprocess of the real tool (tools/preprocess.py, tools/pretrain.py,
tools/finetune.py) with train.threads=1 and its output in its own folder: OUT/pretrain_ROW and
OUT/ROW/<fraction>pct_seed<seed> (its tool's log in bench.log). --jobs of them run at a time (2:
one per core): scratch fine-tunes run while the pretraining runs, pretrained ones wait for their
encoder. A finished run (metrics.json; encoder.pt for a pretraining) is reused, after checking that
its config.yaml has this benchmark's settings; an interrupted one (checkpoints/last.pt) resumes
with --resume, so an interrupted benchmark continues where it stopped.

Evaluation: the final validation that fine-tuning writes to metrics.json, on every scan of the
held-out sequence (--val-sequence; synthetic: 04, 40 scans; train.val_every=0 and
train.val_max_scans=0, so nothing else is validated and nothing is subsampled).

Printed: the plan (runs, steps, a time estimate), the elapsed time, then the table of the slides:
one row per method, one column per label fraction, each cell the mIoU (%) averaged over the seeds
and, in parentheses, its difference to "No Pre-training" (mean over seeds of the per-seed
difference); then every seed's mIoU. The LAST line is the target check at 1% labels (or the
smallest fraction run): ISCC - scratch averaged over the seeds, the worst seed's difference, and
whether the target (mean >= +3.0 mIoU and no seed below scratch) is met. OUT/summary.json holds the
settings, every run's mIoU, the table and the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voxseg import atomic  # noqa: E402
from voxseg.errors import VoxsegError  # noqa: E402

PRETRAIN_CONFIG = ROOT / "configs" / "pretrain" / "synthetic_minkunet14a_iscc.yaml"
FINETUNE_CONFIG = ROOT / "configs" / "finetune" / "synthetic_minkunet14a.yaml"
PREPROCESS_CONFIG = ROOT / "configs" / "preprocess" / "default.yaml"
SYNTHETIC_LABELS = ROOT / "configs" / "labels" / "synthetic.yaml"
DEFAULT_DATA = "data/synthetic"

SCRATCH, ISCC = "scratch", "iscc"
# row -> (the slides' name, the pretraining's overrides of configs/_base_/models/minkunet14a_iscc.yaml;
# None: no pretraining)
ROWS: dict[str, tuple[str, list[str] | None]] = {
    SCRATCH: ("No Pre-training", None),
    ISCC: ("Ours (ISCC)", []),
    "occ8": ("occ-only(8)", ["model.use_local=false", "model.use_global=false", "model.occupancy_bins=8"]),
    "occ16": ("occ-only(16)", ["model.use_local=false", "model.use_global=false", "model.occupancy_bins=16"]),
    "occ32": ("occ-only(32)", ["model.use_local=false", "model.use_global=false", "model.occupancy_bins=32"]),
    "local": ("local-only", ["model.use_global=false", "model.use_occupancy=false"]),
    "global": ("global-only", ["model.use_local=false", "model.use_occupancy=false"]),
    "full100": ("full(100)", ["model.use_occupancy=false", "model.num_prototypes=100"]),
    "full200": ("full(200)", ["model.use_occupancy=false", "model.num_prototypes=200"]),
}
ABLATIONS = ["occ8", "occ16", "occ32", "local", "global", "full100", "full200"]
PRESETS = {"ablation": [SCRATCH, ISCC, *ABLATIONS]}

# The default budget: 1 pretraining + 2 rows x 4 fractions x 2 seeds = 16 fine-tunes in < 90 min on
# 2 busy CPU cores (estimate() below: ~75 min at the typical step times, ~86 min at the slow ones).
DEFAULT_PRETRAIN_STEPS = 500
DEFAULT_FINETUNE_STEPS = 250
# Seconds measured on a busy 2-core machine at 0.2 m voxels, one thread per run, two runs at a time:
# typical (slow). A fine-tune's fixed part: start, data check, the final validation of 40 scans.
PRETRAIN_STEP_S, PRETRAIN_STEP_SLOW_S, PRETRAIN_FIXED_S = 6.0, 7.0, 30.0
FINETUNE_STEP_S, FINETUNE_STEP_SLOW_S, FINETUNE_FIXED_S = 1.2, 1.4, 60.0

TARGET_FRACTION, TARGET_DELTA = 1.0, 3.0  # the target: +3 mIoU at 1% labels, no seed worse
RUNTIME_KEYS = ("output_dir", "train.device", "train.progress")  # overrides a reused run may differ in


class BenchError(VoxsegError):
    pass


# ----------------------------------------------------------------------------------------- the plan
@dataclass
class Settings:
    data: Path
    out: Path
    train_sequences: list[str]
    val_sequence: str
    label_config: Path
    fractions: list[float]
    seeds: list[int]
    rows: list[str]
    pretrain_steps: int = DEFAULT_PRETRAIN_STEPS
    finetune_steps: int = DEFAULT_FINETUNE_STEPS
    voxel_size: float = 0.2
    device: str = "auto"
    num_classes: int | None = None  # the label config's; None: the recipe's (12, synthetic)
    pretrain_config: Path = PRETRAIN_CONFIG
    finetune_config: Path = FINETUNE_CONFIG


@dataclass
class Job:
    name: str
    kind: str  # preprocess | pretrain | finetune
    argv: list[str]  # without --resume, which launch() adds where a checkpoint exists
    run_dir: Path
    after: list[str] = field(default_factory=list)  # jobs that must have succeeded first
    row: str | None = None
    fraction: float | None = None
    seed: int | None = None
    overrides: list[str] = field(default_factory=list)
    done_check: Callable[[], bool] | None = None  # preprocess: whether its output is complete

    def finished(self) -> bool:
        if self.done_check is not None:
            return self.done_check()
        if self.kind == "pretrain":
            return (self.run_dir / "checkpoints" / "encoder.pt").is_file()
        return (self.run_dir / "metrics.json").is_file()

    def resumable(self) -> bool:
        return self.kind != "preprocess" and (self.run_dir / "checkpoints" / "last.pt").is_file()

    def command(self) -> list[str]:
        return self.argv + (["--resume"] if self.resumable() and not self.finished() else [])

    @property
    def log(self) -> Path:
        return self.run_dir / "bench.log"


def frac_key(fraction: float) -> str:
    return f"{fraction:g}"


def finetune_dir(out: Path, row: str, fraction: float, seed: int) -> Path:
    return out / row / f"{frac_key(fraction)}pct_seed{seed}"


def pretrain_dir(out: Path, row: str) -> Path:
    return out / f"pretrain_{row}"


def groups_complete(data: Path, sequences: list[str]) -> bool:
    """Every sequence has preprocessing's groups, complete (the manifest says so)."""
    for seq in sequences:
        manifest = data / "sequences" / seq / "groups" / "manifest.json"
        try:
            if json.loads(manifest.read_text()).get("status") != "complete":
                return False
        except (OSError, ValueError, AttributeError):
            return False
    return True


def seq_list(sequences: list[str]) -> str:
    return json.dumps(sequences)  # YAML flow list of strings: "08" stays "08"


def finetune_overrides(s: Settings, fraction: float, seed: int, run_dir: Path) -> list[str]:
    """The fine-tuning overrides: identical for every row of one (fraction, seed) but output_dir."""
    overrides = [
        f"data.root={s.data}", f"data.label_config={s.label_config}",
        f"data.train.sequences={seq_list(s.train_sequences)}", f"data.val.sequences={seq_list([s.val_sequence])}",
        f"model.backbone.voxel_size={s.voxel_size}",
        f"train.max_steps={s.finetune_steps}", "train.batch_size=1", f"train.label_fraction={fraction / 100!r}",
        f"train.seed={seed}", "train.val_every=0", "train.val_max_scans=0",
        "train.threads=1", "train.progress=false", f"train.device={s.device}",
    ]
    if s.num_classes is not None:
        overrides.append(f"model.heads.semantic.num_classes={s.num_classes}")
    return overrides + [f"output_dir={run_dir}"]


def pretrain_overrides(s: Settings, row: str, run_dir: Path) -> list[str]:
    return [
        f"data.root={s.data}", f"data.train.sequences={seq_list(s.train_sequences)}",
        f"model.backbone.voxel_size={s.voxel_size}", *ROWS[row][1],
        f"train.max_steps={s.pretrain_steps}", "train.threads=1", "train.progress=false", f"train.device={s.device}",
        f"output_dir={run_dir}",
    ]


def plan(s: Settings) -> list[Job]:
    """Every job, in the order they should start: preprocessing, the pretrainings (the long
    ones, on the critical path), then the fine-tunes fraction by fraction, smallest first, and
    seed by seed, each row in turn. A pretrained fine-tune waits for its encoder, so the scratch
    ones fill the free core meanwhile; once the encoder is there the smallest fraction's pairs
    finish first, and an interrupted benchmark has the comparisons that matter most."""
    py = sys.executable
    jobs: list[Job] = []
    prep: list[str] = []
    pretrained_rows = [r for r in s.rows if ROWS[r][1] is not None]
    if pretrained_rows:
        prep_job = Job("preprocess", "preprocess",
                       [py, str(ROOT / "tools" / "preprocess.py"), "--dataset", str(s.data),
                        "--sequences", *s.train_sequences, "--config", str(PREPROCESS_CONFIG), "--no-progress"],
                       s.out / "preprocess", done_check=lambda: groups_complete(s.data, s.train_sequences))
        jobs.append(prep_job)
        prep = [prep_job.name]
    for row in pretrained_rows:
        run_dir = pretrain_dir(s.out, row)
        overrides = pretrain_overrides(s, row, run_dir)
        jobs.append(Job(f"pretrain_{row}", "pretrain",
                        [py, str(ROOT / "tools" / "pretrain.py"), "--config", str(s.pretrain_config), *overrides],
                        run_dir, after=list(prep), row=row, overrides=overrides))
    for fraction in sorted(s.fractions):
        for seed in s.seeds:
            for row in [r for r in s.rows if ROWS[r][1] is None] + pretrained_rows:
                run_dir = finetune_dir(s.out, row, fraction, seed)
                overrides = finetune_overrides(s, fraction, seed, run_dir)
                argv = [py, str(ROOT / "tools" / "finetune.py"), "--config", str(s.finetune_config)]
                after = []
                if ROWS[row][1] is not None:
                    argv += ["--pretrained", str(pretrain_dir(s.out, row) / "checkpoints" / "encoder.pt")]
                    after = [f"pretrain_{row}"]
                jobs.append(Job(f"{row}/{run_dir.name}", "finetune", argv + overrides, run_dir, after=after,
                                row=row, fraction=fraction, seed=seed, overrides=overrides))
    return jobs


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return KeyError
        node = node[part]
    return node


def check_reused(job: Job) -> None:
    """A finished run is reused only if its config.yaml has this benchmark's overrides (but the
    runtime ones): otherwise its numbers belong to another setting."""
    path = job.run_dir / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BenchError(f"{path}: cannot read the finished run's config ({exc}); delete {job.run_dir} to rerun it")
    differ = []
    for item in job.overrides:
        key, _, raw = item.partition("=")
        if key.startswith(RUNTIME_KEYS):
            continue
        want, have = yaml.safe_load(raw), _lookup(saved, key)
        if have != want and not (isinstance(want, list) and have is not KeyError and
                                 [str(x) for x in want] == [str(x) for x in have]):
            differ.append(f"{key} is {'missing' if have is KeyError else have!r}, the benchmark asks {want!r}")
    if differ:
        raise BenchError(f"{job.run_dir}: a finished run of other settings ({'; '.join(differ)}); "
                         "choose another --out or delete the folder to rerun it")


# ------------------------------------------------------------------------------------- the runner
def start_process(job: Job) -> subprocess.Popen:
    """The job's tool in its own session (a terminal's Ctrl-C reaches the benchmark alone, which
    stops its runs with one SIGTERM each: they checkpoint and exit), its output in bench.log."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    command = job.command()
    with open(job.log, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join("    " + line for line in path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "    (no log)"


def run_jobs(jobs: list[Job], parallel: int, launch: Callable[[Job], object] = start_process,
             poll_s: float = 2.0, say: Callable[[str], None] = print) -> dict[str, str]:
    """Run `jobs` (in list order as they become ready), `parallel` at a time; a job starts once
    every job in its `after` has succeeded and is skipped if one failed. Finished jobs are not
    run again. Returns each job's status: reused, done, failed or skipped."""
    status: dict[str, str] = {}
    for job in jobs:
        if job.finished():
            status[job.name] = "reused"
    pending = [j for j in jobs if j.name not in status]
    running: dict[str, tuple[Job, object, float]] = {}
    try:
        while pending or running:
            changed = True
            while changed:  # skip whatever waits on a failure, transitively
                changed = False
                for job in list(pending):
                    if any(status.get(d) in ("failed", "skipped") for d in job.after):
                        status[job.name] = "skipped"
                        pending.remove(job)
                        say(f"skipped {job.name}: {', '.join(d for d in job.after if status.get(d) != 'done')} failed")
                        changed = True
            for job in list(pending):
                if len(running) >= parallel:
                    break
                if all(status.get(d) in ("done", "reused") for d in job.after):
                    resume = " (resuming)" if job.resumable() else ""
                    say(f"{time.strftime('%H:%M:%S')} start {job.name}{resume}")
                    running[job.name] = (job, launch(job), time.perf_counter())
                    pending.remove(job)
            if not running:
                if pending:  # waiting on jobs that are not in the plan: cannot happen with plan()
                    for job in pending:
                        status[job.name] = "skipped"
                        say(f"skipped {job.name}: waits on {job.after}, which never ran")
                    pending = []
                break
            finished = []
            while not finished:
                for name, (job, proc, started) in running.items():
                    rc = proc.poll()
                    if rc is not None:
                        finished.append(name)
                        took = (time.perf_counter() - started) / 60
                        if rc == 0 and job.finished():
                            status[name] = "done"
                            say(f"{time.strftime('%H:%M:%S')} done  {name} in {took:.1f} min")
                        else:
                            status[name] = "failed"
                            why = f"exit status {rc}" if rc else "exited without its output"
                            say(f"{time.strftime('%H:%M:%S')} FAILED {name} ({why}) after {took:.1f} min; "
                                f"the end of {job.log}:\n{tail(job.log)}")
                if not finished and poll_s:
                    time.sleep(poll_s)
            for name in finished:
                del running[name]
    except KeyboardInterrupt:
        for name, (job, proc, _) in running.items():
            say(f"stopping {name} (it saves a checkpoint; rerun the benchmark to continue)")
            proc.send_signal(signal.SIGTERM)
        for name, (job, proc, _) in running.items():
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    return status


def estimate(jobs: list[Job], parallel: int, s: Settings, slow: bool = False) -> float:
    """Seconds the unfinished jobs take when run as run_jobs runs them, at the CPU step times
    measured at 0.2 m voxels (a list-scheduling simulation)."""
    def cost(job: Job) -> float:
        if job.kind == "pretrain":
            return PRETRAIN_FIXED_S + s.pretrain_steps * (PRETRAIN_STEP_SLOW_S if slow else PRETRAIN_STEP_S)
        if job.kind == "finetune":
            return FINETUNE_FIXED_S + s.finetune_steps * (FINETUNE_STEP_SLOW_S if slow else FINETUNE_STEP_S)
        return 0.0 if job.finished() else 600.0  # preprocessing 200 scans: minutes

    done = {j.name for j in jobs if j.finished()}
    pending = [j for j in jobs if j.name not in done]
    running: list[tuple[float, str]] = []
    now = 0.0
    while pending or running:
        for job in list(pending):  # as run_jobs: the first ready jobs in list order take the free slots
            if len(running) >= parallel:
                break
            if all(d in done for d in job.after):
                running.append((now + cost(job), job.name))
                pending.remove(job)
        if not running:
            break
        running.sort()
        now, name = running.pop(0)
        done.add(name)
    return now


# ----------------------------------------------------------------------------------- the results
def read_results(jobs: list[Job], status: dict[str, str], steps: int) -> dict[tuple[str, float, int], float]:
    """mIoU (0..1) of every fine-tune that finished, from its metrics.json."""
    miou = {}
    for job in jobs:
        if job.kind != "finetune" or status.get(job.name) not in ("done", "reused"):
            continue
        path = job.run_dir / "metrics.json"
        metrics = json.loads(path.read_text())
        if metrics.get("step") != steps:
            raise BenchError(f"{path}: the run ended at step {metrics.get('step')}, not {steps}")
        miou[(job.row, job.fraction, job.seed)] = float(metrics["miou"])
    return miou


def check_subsets(jobs: list[Job], status: dict[str, str]) -> int:
    """Every row of one (fraction, seed) trained on the same scans; returns how many groups were compared."""
    groups: dict[tuple[float, int], dict[str, str]] = {}
    for job in jobs:
        if job.kind == "finetune" and status.get(job.name) in ("done", "reused"):
            path = job.run_dir / "label_subset.txt"
            groups.setdefault((job.fraction, job.seed), {})[job.name] = path.read_text()
    for (fraction, seed), subsets in groups.items():
        first = next(iter(subsets.values()))
        differ = [name for name, text in subsets.items() if text != first]
        if differ:
            raise BenchError(f"{frac_key(fraction)}% seed {seed}: the runs {', '.join(subsets)} did not train on the "
                             f"same labelled scans (label_subset.txt differs in {', '.join(differ)})")
    return len(groups)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summarize(miou: dict[tuple[str, float, int], float], rows: list[str], fractions: list[float],
              seeds: list[int]) -> dict:
    """The table (percent): per row and fraction the mean over seeds, the per-seed values, and
    against scratch the mean of the per-seed differences; a cell lacking a seed has mean None.
    Then the target check at 1% (or the smallest fraction): ISCC against scratch."""
    table: dict[str, dict[str, dict]] = {}
    for row in rows:
        table[row] = {}
        for fraction in fractions:
            per_seed = {seed: 100 * miou[(row, fraction, seed)] for seed in seeds if (row, fraction, seed) in miou}
            cell: dict = {"seeds": {str(k): v for k, v in per_seed.items()},
                          "mean": _mean(list(per_seed.values())) if len(per_seed) == len(seeds) else None,
                          "delta": None, "seed_deltas": {}}
            if row != SCRATCH and (SCRATCH, fraction, seeds[0]) in miou:
                deltas = {seed: per_seed[seed] - 100 * miou[(SCRATCH, fraction, seed)]
                          for seed in per_seed if (SCRATCH, fraction, seed) in miou}
                cell["seed_deltas"] = {str(k): v for k, v in deltas.items()}
                if len(deltas) == len(seeds):
                    cell["delta"] = _mean(list(deltas.values()))
            table[row][frac_key(fraction)] = cell
    fraction = TARGET_FRACTION if TARGET_FRACTION in fractions else min(fractions)
    target: dict = {"fraction": fraction, "threshold": TARGET_DELTA, "seeds": len(seeds),
                    "mean_delta": None, "worst_delta": None, "worst_seed": None, "met": None}
    if ISCC in table and SCRATCH in table:
        cell = table[ISCC][frac_key(fraction)]
        if cell["delta"] is not None:
            worst_seed = min(cell["seed_deltas"], key=lambda k: cell["seed_deltas"][k])
            target.update(mean_delta=cell["delta"], worst_delta=cell["seed_deltas"][worst_seed],
                          worst_seed=int(worst_seed))
            target["met"] = bool(cell["delta"] >= TARGET_DELTA and target["worst_delta"] >= 0)
    return {"table": table, "target": target}


def verdict(target: dict) -> str:
    f = frac_key(target["fraction"])
    if target["met"] is None:
        return (f"{f}% labels: ISCC - scratch not measured (needs rows scratch and iscc, every seed finished): "
                "target not checked")
    why = []
    if target["mean_delta"] < target["threshold"]:
        why.append(f"mean below +{target['threshold']:.1f}")
    if target["worst_delta"] < 0:
        why.append(f"seed {target['worst_seed']} below scratch")
    seeds = f"{target['seeds']} seed{'s' if target['seeds'] != 1 else ''}"
    met = f"target met (>= +{target['threshold']:.1f} mean, no seed below scratch)"
    return (f"{f}% labels: ISCC - scratch = {target['mean_delta']:+.2f} mIoU (mean of {seeds}), "
            f"worst seed {target['worst_delta']:+.2f} (seed {target['worst_seed']}): "
            + (met if target["met"] else f"target NOT met ({', '.join(why)})"))


def format_table(summary: dict, rows: list[str], fractions: list[float], seeds: list[int]) -> list[str]:
    width = 16
    lines = [f"{'method':<16}" + "".join(f"{frac_key(f) + '%':>{width}}" for f in fractions)]
    lines.append("-" * len(lines[0]))
    for row in rows:
        cells = []
        for fraction in fractions:
            cell = summary["table"][row][frac_key(fraction)]
            text = "-" if cell["mean"] is None else f"{cell['mean']:.1f}"
            if row != SCRATCH and cell["delta"] is not None:
                text += f" ({cell['delta']:+.1f})"
            cells.append(f"{text:>{width}}")
        lines.append(f"{ROWS[row][0]:<16}" + "".join(cells))
    lines.append("")
    lines.append("per seed (mIoU %, difference to No Pre-training):")
    lines.append(f"{'method':<16}{'seed':>5}" + "".join(f"{frac_key(f) + '%':>{width}}" for f in fractions))
    for row in rows:
        for seed in seeds:
            cells = []
            for fraction in fractions:
                cell = summary["table"][row][frac_key(fraction)]
                value, delta = cell["seeds"].get(str(seed)), cell["seed_deltas"].get(str(seed))
                text = "-" if value is None else f"{value:.1f}"
                if delta is not None:
                    text += f" ({delta:+.1f})"
                cells.append(f"{text:>{width}}")
            lines.append(f"{ROWS[row][0]:<16}{seed:>5}" + "".join(cells))
    return lines


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", nargs="+", type=float, default=[1, 2, 5, 10],
                        help="label fractions in percent of the training scans (default: 1 2 5 10)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="fine-tuning seeds (default: 0 1)")
    parser.add_argument("--rows", nargs="+", default=[SCRATCH, ISCC], choices=list(ROWS) + list(PRESETS), metavar="ROW",
                        help="scratch, iscc (default); ablation rows occ8 occ16 occ32 local global full100 full200; "
                             "'ablation' = all of them (scratch is always run: the deltas need it)")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="SemanticKITTI-format root (default %(default)s, generated when missing)")
    parser.add_argument("--train-sequences", nargs="+", default=["00", "01", "02", "03"],
                        help="sequences to pretrain and fine-tune on (default: 00 01 02 03)")
    parser.add_argument("--val-sequence", default="04", help="held-out sequence (default: 04)")
    parser.add_argument("--label-config", default=str(SYNTHETIC_LABELS), help="class mapping (default: synthetic)")
    parser.add_argument("--pretrain-steps", type=int, default=DEFAULT_PRETRAIN_STEPS,
                        help="steps of each pretraining, batch 2 pairs (default %(default)s)")
    parser.add_argument("--finetune-steps", type=int, default=DEFAULT_FINETUNE_STEPS,
                        help="steps of every fine-tune, batch 1 (default %(default)s)")
    parser.add_argument("--voxel-size", type=float, default=0.2, help="metres, pretraining and fine-tuning (default 0.2)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (every run)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one per CPU core)")
    parser.add_argument("--out", default="runs/bench_label_efficiency", help="output folder (default %(default)s)")
    args = parser.parse_args(argv)
    if any(not 0 < f <= 100 for f in args.fractions):
        parser.error("--fractions: percentages in (0, 100]")
    if args.jobs < 1 or args.pretrain_steps < 1 or args.finetune_steps < 1 or args.voxel_size <= 0:
        parser.error("--jobs, --pretrain-steps, --finetune-steps and --voxel-size must be positive")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    from voxseg.data import semantic_kitti as sk
    from voxseg.data.labels import LabelConfig

    rows = [r for row in args.rows for r in PRESETS.get(row, [row])]
    rows = list(dict.fromkeys([SCRATCH] + rows))  # scratch first, each row once
    label_config = Path(args.label_config).resolve()
    num_classes = None if label_config == SYNTHETIC_LABELS.resolve() else LabelConfig.load(label_config).num_classes
    return Settings(data=Path(args.data).resolve(), out=Path(args.out).resolve(),
                    train_sequences=[sk.sequence_name(q) for q in args.train_sequences],
                    val_sequence=sk.sequence_name(args.val_sequence), label_config=label_config,
                    fractions=list(dict.fromkeys(args.fractions)), seeds=list(dict.fromkeys(args.seeds)), rows=rows,
                    pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
                    voxel_size=args.voxel_size, device=args.device, num_classes=num_classes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings_from(args)
    start = time.perf_counter()
    if args.data == DEFAULT_DATA and not (s.data / "sequences").is_dir():
        from voxseg.synthetic import SyntheticSpec, generate_dataset

        print(f"generating the synthetic dataset in {s.data}", flush=True)
        generate_dataset(s.data, SyntheticSpec())
    val_dir = s.data / "sequences" / s.val_sequence / "velodyne"
    val_scans = len(list(val_dir.glob("*.bin"))) if val_dir.is_dir() else 0
    if not val_scans:
        raise BenchError(f"{val_dir}: no held-out scans")

    jobs = plan(s)
    for job in jobs:
        if job.kind != "preprocess" and job.finished():
            check_reused(job)
    finetunes = [j for j in jobs if j.kind == "finetune"]
    pretrainings = [j for j in jobs if j.kind == "pretrain"]
    todo = [j for j in jobs if not j.finished()]
    print(f"plan: {len(pretrainings)} pretraining{'s' if len(pretrainings) != 1 else ''} x {s.pretrain_steps} steps "
          f"({', '.join(j.row for j in pretrainings) or 'none'}), {len(finetunes)} fine-tunes "
          f"({len(s.rows)} rows x {len(s.fractions)} fractions x {len(s.seeds)} seeds) x {s.finetune_steps} steps, "
          f"batch 1, voxel {s.voxel_size:g} m, device {s.device}, {args.jobs} jobs at a time; "
          f"held-out sequence {s.val_sequence} ({val_scans} scans); output {s.out}", flush=True)
    if len(todo) < len(jobs):
        print(f"  {len(jobs) - len(todo)} of {len(jobs)} jobs already finished: reused", flush=True)
    if todo:
        low, high = estimate(jobs, args.jobs, s), estimate(jobs, args.jobs, s, slow=True)
        print(f"  estimate on a busy 2-core CPU at 0.2 m voxels: {low / 60:.0f}-{high / 60:.0f} min "
              "(a GPU is faster, smaller voxels slower)", flush=True)

    status = run_jobs(jobs, args.jobs)
    elapsed = time.perf_counter() - start
    miou = read_results(jobs, status, s.finetune_steps)
    compared = check_subsets(jobs, status)
    summary = summarize(miou, s.rows, s.fractions, s.seeds)
    failed = sorted(n for n, st in status.items() if st in ("failed", "skipped"))
    summary.update(
        settings={"data": str(s.data), "train_sequences": s.train_sequences, "val_sequence": s.val_sequence,
                  "val_scans": val_scans, "label_config": str(s.label_config), "fractions": s.fractions,
                  "seeds": s.seeds, "rows": s.rows, "pretrain_steps": s.pretrain_steps,
                  "finetune_steps": s.finetune_steps, "voxel_size": s.voxel_size, "device": s.device,
                  "jobs": args.jobs},
        runs={f"{row}/{frac_key(f)}pct_seed{seed}": 100 * v for (row, f, seed), v in sorted(miou.items())},
        status=status, failed=failed, elapsed_s=elapsed)
    atomic.write_text(s.out / "summary.json", json.dumps(summary, indent=2) + "\n")

    print(f"\nelapsed {elapsed / 60:.1f} min; {sum(st == 'done' for st in status.values())} jobs run, "
          f"{sum(st == 'reused' for st in status.values())} reused"
          + (f", {len(failed)} failed or skipped: {', '.join(failed)}" if failed else "")
          + f"; labelled scans identical across rows for all {compared} (fraction, seed) pairs")
    print(f"\nmIoU (%) on sequence {s.val_sequence} ({val_scans} scans), mean of seeds "
          f"{' '.join(map(str, s.seeds))}; (difference to No Pre-training); summary: {s.out / 'summary.json'}")
    for line in format_table(summary, s.rows, s.fractions, s.seeds):
        print(line)
    print(verdict(summary["target"]), flush=True)
    return 1 if failed else 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    except VoxsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue", file=sys.stderr)
        sys.exit(130)
