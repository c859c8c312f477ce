#!/usr/bin/env python3
"""Label efficiency: fine-tuning from an ISCC-pretrained encoder against fine-tuning from scratch.

    python benchmarks/label_efficiency.py                         # the default: ~75 min on 2 CPU cores
    python benchmarks/label_efficiency.py --recorded              # the recorded result: hours (see below)
    python benchmarks/label_efficiency.py --render-readme         # docs/results.md's tables from the records
    python benchmarks/label_efficiency.py --pretrain-steps 1000 --rows scratch iscc --fractions 1 \\
        --seeds-at 1 0 1 2 3 4 --record benchmarks/results/label_efficiency_studies/pretrain_1000_steps.json
                                                                  # a study: one method change at 1%
    python benchmarks/label_efficiency.py --fractions 1 --seeds-at 1 0 2       # seeds 0 and 2 at 1%
    python benchmarks/label_efficiency.py --rows ablation --ablation-fractions 1 10 --ablation-seeds 0 1 2
    python benchmarks/label_efficiency.py --device cuda --voxel-size 0.05 --pretrain-steps 5000 \\
        --finetune-steps 2000 --jobs 1                            # closer to the paper's setting, on a GPU
    python benchmarks/label_efficiency.py --data /data/kitti --train-sequences 00 01 02 03 04 05 06 07 09 10 \\
        --val-sequence 08 --label-config configs/labels/semantic-kitti.yaml   # any SemanticKITTI-format data

What is compared. For every label fraction (--fractions, percent of the training scans) and seed
(--seeds for every fraction, --seeds-at for one), MinkUNet14A + semantic head is fine-tuned with
the semantic recipe (configs/finetune/synthetic_minkunet14a.yaml, batch 1) once from a random
initialisation ("No Pre-training") and once from each pretrained encoder (`--pretrained
OUT/pretrain_ROW/checkpoints/encoder.pt`). Within a (fraction, seed) every run has the same config
and overrides: the same steps, the same labelled scans (finetune's select_subset draws them from
the label fraction and the seed alone; the benchmark asserts that the runs' label_subset.txt are
identical), the same initialisation of the head and the same order of batches; only the
backbone's starting weights differ. Each pretraining row is one run of tools/pretrain.py
(configs/pretrain/synthetic_minkunet14a_iscc.yaml, pretraining seed 0) on the training sequences,
without labels; "iscc" is the full method, and the ablation rows switch its loss terms as the
header of configs/_base_/models/minkunet14a_iscc.yaml lists them (occ2/8/16/32: occupancy only
with K bins, K = 2 being ALSO's binary occupancy; local, global: one contrastive term;
full100/200: both contrastive terms without occupancy, M prototypes). The ablation rows run at
--ablation-fractions with --ablation-seeds (default: every fraction, its seeds). Preprocessing's
groups (tools/preprocess.py, configs/preprocess/default.yaml) are made first where the training
sequences lack them.

--recorded is the protocol of the recorded result: 5 seeds (0-4) at 1% and 2%, 3 (0-2) at 5% and
10%, and the ablation rows at 1% and 10% with seeds 0-2: 9 pretrainings and 80 fine-tunes, about
8-9 hours on 2 CPU cores. It writes benchmarks/results/label_efficiency.json (--record PATH writes
any protocol's record there), from which --render-readme rewrites the table in docs/results.md.
A method change is a study: --pretrain-steps, --pretrain-set KEY=VALUE ... (config overrides of
every pretraining, after its row's) or --preprocess-set KEY=VALUE ... (preprocessing overrides: the
groups are made into OUT/groups, and every pretraining reads them there and asks for those
parameters); the fine-tuning never changes. A study runs at 1% with the recorded seeds,
its record written to benchmarks/results/label_efficiency_studies/ (--record PATH); --render-readme
also rewrites the studies table there: the recorded protocol, then each study.

Every run is a subprocess of the real tool (tools/preprocess.py, tools/pretrain.py,
tools/finetune.py), importing this checkout's voxseg (PYTHONPATH, even under a venv made in
another checkout), with train.threads=1 and its output in its own folder: OUT/pretrain_ROW and
OUT/ROW/<fraction>pct_seed<seed> (its tool's log in bench.log). --jobs of them run at a time (2:
one per core): scratch fine-tunes run while the first pretraining runs, pretrained ones wait
for their encoder, and rows complete one after another (plan). Each run folder records the code
that made it (code.json: benchmarks.common.code_identity, a hash of every Python and YAML file of
voxseg/, preprocessing/, configs/ and tools/, the git commit and whether the code differed from
it). A finished run (metrics.json;
encoder.pt for a pretraining) is reused only if its config.yaml has this benchmark's settings
(otherwise the benchmark stops: the folder holds another experiment) and its code hash is this
code's; an interrupted one (checkpoints/last.pt) resumes with --resume on the same terms, so an
interrupted benchmark continues where it stopped. A run made by other code (or before code was
recorded), and every run that depends on a job that runs again (a fine-tune on a re-made
encoder), is moved to OUT/stale/ and rerun, one line each saying why. A run whose launch finds
the code changed since the benchmark started fails instead of mixing code.

With --record, the record is written after every fine-tune that finishes ("complete": false
until every planned one is measured), and a later invocation with the same settings and the same
code hash takes the record's runs as finished (carry_recorded): a protocol longer than one
machine's life continues from the record committed to the repository, where its run folders are
gone; only the fine-tunes it lacks run, and the pretrainings they need.

--verify NAME [NAME ...] reruns finished runs of the plan (a fine-tune such as scratch/1pct_seed0,
or a pretraining such as pretrain_iscc) into OUT/verify/ with the same command and compares them
with the originals: the same mIoU to the last digit and every tensor of the checkpoint equal
(torch.equal). A recorded cell must reproduce exactly when rerun at its commit on the same kind
of CPU with the same OpenBLAS kernels (each run records both, benchmarks.common.machine_info's
`cpu`: other kernels take other code paths, and a run there is as different as another seed);
this checks it. The verifying
fine-tune of a pretrained row starts from the original encoder.

Evaluation: the final validation that fine-tuning writes to metrics.json, on every scan of the
held-out sequence (--val-sequence; synthetic: 04, 40 scans; train.val_every=0 and
train.val_max_scans=0, so nothing else is validated and nothing is subsampled).

Printed: the plan (runs, steps, a time estimate), the elapsed time, then the table of the slides:
one row per method, one column per label fraction, each cell the mIoU (%) averaged over its n
seeds and, in parentheses, the mean over those seeds of the difference to "No Pre-training" with
its paired 95% confidence interval (t distribution, n - 1 degrees of freedom; undefined for one
seed); then every seed's mIoU. The last three lines check issue 20's targets: ISCC ahead of
scratch at every fraction; the full method at least matching every ablation row at 1% (paired
over the row's seeds); and LAST the target at 1% labels (or the smallest fraction run): ISCC -
scratch >= +5 mIoU averaged over >= 5 seeds, with the confidence interval above 0.
OUT/summary.json (and the record, where one is written) holds the settings, the code, the
machine, every run's mIoU, the table and the three targets' checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    BenchError,
    code_hash,
    code_identity,
    commit_problem,
    describe_code,
    describe_cpus,
    machine_info,
    read_record,
    recorded_code,
    replace_block,
    root_relative,
    set_aside,
)
from voxseg import atomic  # noqa: E402
from voxseg.errors import VoxsegError  # noqa: E402

PRETRAIN_CONFIG = ROOT / "configs" / "pretrain" / "synthetic_minkunet14a_iscc.yaml"
FINETUNE_CONFIG = ROOT / "configs" / "finetune" / "synthetic_minkunet14a.yaml"
PREPROCESS_CONFIG = ROOT / "configs" / "preprocess" / "default.yaml"
SYNTHETIC_LABELS = ROOT / "configs" / "labels" / "synthetic.yaml"
DEFAULT_DATA = "data/synthetic"
RECORD = ROOT / "benchmarks" / "results" / "label_efficiency.json"
STUDIES = ROOT / "benchmarks" / "results" / "label_efficiency_studies"  # one record per method change tried
RESULTS_PAGE = ROOT / "docs" / "results.md"
TABLE_BEGIN, TABLE_END = "<!-- label-efficiency:begin -->", "<!-- label-efficiency:end -->"
STUDIES_BEGIN, STUDIES_END = "<!-- label-efficiency-studies:begin -->", "<!-- label-efficiency-studies:end -->"


class Row(NamedTuple):
    name: str  # the slides' name
    overrides: list[str] | None  # of configs/_base_/models/minkunet14a_iscc.yaml; None: no pretraining
    closest: str  # the public method the row is closest to


SCRATCH, ISCC = "scratch", "iscc"
ROWS: dict[str, Row] = {
    SCRATCH: Row("No Pre-training", None, "-"),
    ISCC: Row("Ours (ISCC)", [], "ISCC (Zhang, Bai, Li, CVPR 2023)"),
    "occ2": Row("occ-only(2)", ["model.use_local=false", "model.use_global=false", "model.occupancy_bins=2"],
                "ALSO (binary occupancy)"),
    "occ8": Row("occ-only(8)", ["model.use_local=false", "model.use_global=false", "model.occupancy_bins=8"],
                "none (ALSO's queries, 8 distance bins)"),
    "occ16": Row("occ-only(16)", ["model.use_local=false", "model.use_global=false", "model.occupancy_bins=16"],
                 "none (ALSO's queries, 16 distance bins)"),
    "occ32": Row("occ-only(32)", ["model.use_local=false", "model.use_global=false", "model.occupancy_bins=32"],
                 "none (ALSO's queries, 32 distance bins)"),
    "local": Row("local-only", ["model.use_global=false", "model.use_occupancy=false"],
                 "SegContrast (segment contrast, momentum teacher)"),
    "global": Row("global-only", ["model.use_local=false", "model.use_occupancy=false"],
                  "none (SwAV's prototypes on segments)"),
    "full100": Row("full(100)", ["model.use_occupancy=false", "model.num_prototypes=100"],
                   "none (SegContrast + SwAV's prototypes)"),
    "full200": Row("full(200)", ["model.use_occupancy=false", "model.num_prototypes=200"],
                   "none (SegContrast + SwAV's prototypes)"),
}
ABLATIONS = ["occ2", "occ8", "occ16", "occ32", "local", "global", "full100", "full200"]
PRESETS = {"ablation": [SCRATCH, ISCC, *ABLATIONS]}

# The default budget: 1 pretraining + 2 rows x 4 fractions x 2 seeds = 16 fine-tunes in < 90 min on
# 2 busy CPU cores (estimate() below: ~75 min at the typical step times, ~86 min at the slow ones).
DEFAULT_FRACTIONS, DEFAULT_SEEDS = [1.0, 2.0, 5.0, 10.0], [0, 1]
DEFAULT_PRETRAIN_STEPS = 500
DEFAULT_FINETUNE_STEPS = 250
# The recorded protocol (issue 20): >= 5 seeds at 1% and 2%, >= 3 at 5% and 10%; the slides'
# ablation rows at 1% and 10% with >= 3 seeds each.
RECORDED_SEEDS = {1.0: [0, 1, 2, 3, 4], 2.0: [0, 1, 2, 3, 4], 5.0: [0, 1, 2], 10.0: [0, 1, 2]}
RECORDED_ABLATION_FRACTIONS, RECORDED_ABLATION_SEEDS = [1.0, 10.0], [0, 1, 2]
# Seconds measured on a busy 2-core machine at 0.2 m voxels, one thread per run, two runs at a time:
# typical (slow). A fine-tune's fixed part: start, data check, the final validation of 40 scans.
PRETRAIN_STEP_S, PRETRAIN_STEP_SLOW_S, PRETRAIN_FIXED_S = 6.0, 7.0, 30.0
FINETUNE_STEP_S, FINETUNE_STEP_SLOW_S, FINETUNE_FIXED_S = 1.2, 1.4, 60.0

# The target: at 1% labels ISCC - scratch >= +5 mIoU, mean over >= 5 seeds, with the
# paired 95% confidence interval above 0.
TARGET_FRACTION, TARGET_DELTA, TARGET_SEEDS, CI_LEVEL = 1.0, 5.0, 5, 0.95
RUNTIME_KEYS = ("output_dir", "train.device", "train.progress")  # overrides a reused run may differ in
# The pretraining keys the benchmark sets itself, each with the flag that sets it (--pretrain-set may not).
BENCHMARK_PRETRAIN_KEYS = {"data.root": "--data", "data.train.sequences": "--train-sequences",
                           "model.backbone.voxel_size": "--voxel-size", "train.max_steps": "--pretrain-steps",
                           "train.threads": None, "train.progress": None, "train.device": "--device",
                           "output_dir": "--out", "data.train.groups_root": "--preprocess-set"}


# ----------------------------------------------------------------------------------------- the plan
def make_cells(rows: list[str], seeds: dict[float, list[int]], ablation_fractions: list[float] | None = None,
               ablation_seeds: list[int] | None = None) -> dict[str, dict[float, list[int]]]:
    """Which fractions and seeds each row fine-tunes: scratch and ISCC at every fraction of `seeds`
    with its seeds, an ablation row at `ablation_fractions` (default: all) with `ablation_seeds`
    (default: the fraction's). Scratch runs every (fraction, seed) of any row, since each
    difference is paired with the scratch run of the same seed. Scratch first, fractions and
    seeds ascending."""
    cells: dict[str, dict[float, list[int]]] = {SCRATCH: {}}
    for row in rows:
        ablation = row not in (SCRATCH, ISCC)
        fractions = ablation_fractions if ablation and ablation_fractions is not None else list(seeds)
        cells[row] = {f: sorted(ablation_seeds if ablation and ablation_seeds is not None else seeds[f])
                      for f in sorted(fractions)}
    scratch: dict[float, set[int]] = {}
    for by_fraction in cells.values():
        for fraction, fraction_seeds in by_fraction.items():
            scratch.setdefault(fraction, set()).update(fraction_seeds)
    cells[SCRATCH] = {f: sorted(scratch[f]) for f in sorted(scratch)}
    return cells


@dataclass
class Settings:
    data: Path
    out: Path
    train_sequences: list[str]
    val_sequence: str
    label_config: Path
    cells: dict[str, dict[float, list[int]]]  # row -> fraction -> seeds (make_cells)
    code: dict  # benchmarks.common.code_identity() of this benchmark's code
    pretrain_steps: int = DEFAULT_PRETRAIN_STEPS
    finetune_steps: int = DEFAULT_FINETUNE_STEPS
    pretrain_set: list[str] = field(default_factory=list)  # KEY=VALUE: a method change for every pretraining
    preprocess_set: list[str] = field(default_factory=list)  # KEY=VALUE: a change of the groups (OUT/groups)
    voxel_size: float = 0.2
    device: str = "auto"
    num_classes: int | None = None  # the label config's; None: the recipe's (12, synthetic)
    pretrain_config: Path = PRETRAIN_CONFIG
    finetune_config: Path = FINETUNE_CONFIG

    @property
    def rows(self) -> list[str]:
        return list(self.cells)

    @property
    def groups_root(self) -> Path:
        """Where the pretrainings read their groups: the data root, or OUT/groups, made with
        preprocess_set."""
        return self.out / "groups" if self.preprocess_set else self.data

    @property
    def fractions(self) -> list[float]:
        return sorted({f for by_fraction in self.cells.values() for f in by_fraction})


@dataclass
class Job:
    name: str
    kind: str  # preprocess | pretrain | finetune
    argv: list[str]  # without --resume, which launch() adds where a checkpoint exists
    run_dir: Path
    code: dict  # the code identity it must run with, written to run_dir/code.json at launch
    after: list[str] = field(default_factory=list)  # jobs that must have succeeded first
    row: str | None = None
    fraction: float | None = None
    seed: int | None = None
    overrides: list[str] = field(default_factory=list)
    done_check: Callable[[], bool] | None = None  # preprocess: whether its output is complete
    # held by the record (carry_recorded): a fine-tune's run entry, or {} for a pretraining that no
    # unrecorded fine-tune needs; such a job is finished without a folder
    recorded: dict | None = None

    def finished(self) -> bool:
        if self.recorded is not None:
            return True
        if self.done_check is not None:
            return self.done_check()
        if self.kind == "pretrain":
            return (self.run_dir / "checkpoints" / "encoder.pt").is_file()
        return (self.run_dir / "metrics.json").is_file()

    def resumable(self) -> bool:
        return (self.kind != "preprocess" and self.recorded is None
                and (self.run_dir / "checkpoints" / "last.pt").is_file())

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
    # groups made with --preprocess-set are read from OUT/groups, and must have those parameters
    groups = [f"data.train.groups_root={s.groups_root}",
              *(f"data.train.group_params.{item}" for item in s.preprocess_set)] if s.preprocess_set else []
    return [
        f"data.root={s.data}", f"data.train.sequences={seq_list(s.train_sequences)}", *groups,
        f"model.backbone.voxel_size={s.voxel_size}", *ROWS[row].overrides, *s.pretrain_set,
        f"train.max_steps={s.pretrain_steps}", "train.threads=1", "train.progress=false", f"train.device={s.device}",
        f"output_dir={run_dir}",
    ]


def plan(s: Settings) -> list[Job]:
    """Every job, in the order they should start: preprocessing, then row by row each
    pretraining followed by its fine-tunes, the scratch fine-tunes after the first pretraining
    (they fill the free core while it runs); fine-tunes fraction by fraction, smallest first,
    then seed by seed. run_jobs starts the first ready job in this order, so a row's fine-tunes
    start as soon as its encoder exists, and the next pretraining takes a core only when no
    fine-tune is ready: each row completes before the rows after it, and a benchmark stopped
    half-way (a session's end) has whole rows, which its record carries over (carry_recorded),
    and at most the pretrainings in flight to redo."""
    py = sys.executable
    jobs: list[Job] = []
    prep: list[str] = []
    pretrained_rows = [r for r in s.rows if ROWS[r].overrides is not None]
    if pretrained_rows:
        out = ["--out", str(s.groups_root), *s.preprocess_set] if s.preprocess_set else []
        prep_job = Job("preprocess", "preprocess",
                       [py, str(ROOT / "tools" / "preprocess.py"), "--dataset", str(s.data),
                        "--sequences", *s.train_sequences, "--config", str(PREPROCESS_CONFIG), "--no-progress", *out],
                       s.out / "preprocess", s.code,
                       done_check=lambda: groups_complete(s.groups_root, s.train_sequences))
        jobs.append(prep_job)
        prep = [prep_job.name]

    def finetunes(row: str) -> list[Job]:
        runs = []
        for fraction, seeds in s.cells[row].items():
            for seed in seeds:
                run_dir = finetune_dir(s.out, row, fraction, seed)
                overrides = finetune_overrides(s, fraction, seed, run_dir)
                argv = [py, str(ROOT / "tools" / "finetune.py"), "--config", str(s.finetune_config)]
                after = []
                if ROWS[row].overrides is not None:
                    argv += ["--pretrained", str(pretrain_dir(s.out, row) / "checkpoints" / "encoder.pt")]
                    after = [f"pretrain_{row}"]
                runs.append(Job(f"{row}/{run_dir.name}", "finetune", argv + overrides, run_dir, s.code, after=after,
                                row=row, fraction=fraction, seed=seed, overrides=overrides))
        return runs

    if not pretrained_rows:
        return jobs + finetunes(SCRATCH)
    for i, row in enumerate(pretrained_rows):
        run_dir = pretrain_dir(s.out, row)
        overrides = pretrain_overrides(s, row, run_dir)
        jobs.append(Job(f"pretrain_{row}", "pretrain",
                        [py, str(ROOT / "tools" / "pretrain.py"), "--config", str(s.pretrain_config), *overrides],
                        run_dir, s.code, after=list(prep), row=row, overrides=overrides))
        jobs += (finetunes(SCRATCH) if i == 0 else []) + finetunes(row)
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
        raise BenchError(
            f"{path}: cannot read the finished run's config ({exc}); delete {job.run_dir} to rerun it"
        ) from exc
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


def stale_runs(jobs: list[Job], code: dict) -> dict[str, str]:
    """The runs whose outputs (a finished run, or a checkpoint to resume) must not be used, each
    with the reason: made by other code than `code` (the issue's rule: a reused run comes from the
    same code), or by code it did not record, or depending on a job that runs again (a
    fine-tune of an encoder that is made again). Preprocessing's groups are data, judged by
    their manifest alone. `jobs` in plan order: dependencies first."""
    will_run: set[str] = set()
    stale: dict[str, str] = {}
    for job in jobs:
        if job.kind != "preprocess" and job.recorded is None and (job.finished() or job.resumable()):
            made_by = recorded_code(job.run_dir)
            rerun_first = [d for d in job.after if d in will_run]
            if made_by is None:
                stale[job.name] = f"its code is not recorded (no code.json), this is {describe_code(code)}"
            elif made_by["code_hash"] != code["code_hash"]:
                stale[job.name] = f"made by {describe_code(made_by)}, this is {describe_code(code)}"
            elif rerun_first:
                stale[job.name] = f"{', '.join(rerun_first)} runs again first"
        if job.name in stale or not job.finished():
            will_run.add(job.name)
    return stale


def set_aside_stale(jobs: list[Job], code: dict, out: Path) -> list[str]:
    """Move every stale run (stale_runs) to OUT/stale/ (benchmarks.common.set_aside), so that it
    runs again from the start. Returns one line per run: what is rerun and why."""
    lines = []
    stale = stale_runs(jobs, code)
    for job in jobs:
        if job.name in stale:
            target = set_aside(job.run_dir, out)
            lines.append(f"rerun {job.name}: {stale[job.name]} (the old run is in {target})")
    return lines


# ------------------------------------------------------------------------------------- the runner
def start_process(job: Job) -> subprocess.Popen:
    """The job's tool in its own session (a terminal's Ctrl-C reaches the benchmark alone, which
    stops its runs with one SIGTERM each: they checkpoint and exit), its output in bench.log and
    its code identity in code.json. Refused if the code changed since the benchmark started:
    the runs of one benchmark come from one code. ROOT leads the tool's PYTHONPATH, so that it
    imports the voxseg that code.json describes: a tool's own folder leads its sys.path, not ROOT,
    and a venv's editable install points at the checkout that made the venv, which for a frozen
    worktree is another one."""
    now = code_hash()
    if now != job.code["code_hash"]:
        raise BenchError(f"the code changed since the benchmark started ({job.code['code_hash'][:12]}, now "
                         f"{now[:12]}): rerun the benchmark, which reruns what other code made")
    job.run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(job.run_dir / "code.json", json.dumps(job.code, indent=2) + "\n")
    command = job.command()
    with open(job.log, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=child_environment())


def child_environment() -> dict[str, str]:
    """This process's environment with ROOT first on PYTHONPATH and unbuffered output."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), "PYTHONUNBUFFERED": "1"}


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join("    " + line for line in path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "    (no log)"


def run_jobs(jobs: list[Job], parallel: int, launch: Callable[[Job], object] = start_process,
             poll_s: float = 2.0, say: Callable[[str], None] = print,
             on_done: Callable[[Job, dict[str, str]], object] | None = None) -> dict[str, str]:
    """Run `jobs` (in list order as they become ready), `parallel` at a time; a job starts once
    every job in its `after` has succeeded and is skipped if one failed; one whose launch is
    refused (BenchError) fails. Finished jobs are not run again. `on_done(job, status)` is called
    after each job that succeeds. Returns each job's status: reused, done, failed or skipped."""
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
            refused = False
            for job in list(pending):
                if len(running) >= parallel:
                    break
                if all(status.get(d) in ("done", "reused") for d in job.after):
                    pending.remove(job)
                    resume = " (resuming)" if job.resumable() else ""
                    try:
                        running[job.name] = (job, launch(job), time.perf_counter())
                    except BenchError as exc:
                        status[job.name] = "failed"
                        say(f"{time.strftime('%H:%M:%S')} FAILED {job.name}: {exc}")
                        refused = True
                        continue
                    say(f"{time.strftime('%H:%M:%S')} start {job.name}{resume}")
            if not running and refused:
                continue  # skip what waits on the refused job, start what does not
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
                            if on_done is not None:
                                on_done(job, status)
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
        for name, (_, proc, _) in running.items():
            say(f"stopping {name} (it saves a checkpoint; rerun the benchmark to continue)")
            proc.send_signal(signal.SIGTERM)
        for _, proc, _ in running.values():
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


# ------------------------------------------------------------------------------- reproducibility
def verify_job(job: Job, out: Path) -> Job:
    """`job` again with its output in OUT/verify/<its folder under OUT>: the same command but
    output_dir; it waits for nothing (what it reads, an encoder, is there)."""
    run_dir = out / "verify" / job.run_dir.relative_to(out)

    def moved(items: list[str]) -> list[str]:
        return [f"output_dir={run_dir}" if item.startswith("output_dir=") else item for item in items]

    return dataclasses.replace(job, argv=moved(job.argv), overrides=moved(job.overrides), run_dir=run_dir, after=[])


def checkpoint_tensors(path: Path) -> dict[str, Any]:
    """Every tensor in a checkpoint file, by its path of keys (model, optimizer, random states...)."""
    import torch

    found: dict[str, Any] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, torch.Tensor):
            found[prefix] = node
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{prefix}.{i}")

    walk(torch.load(path, map_location="cpu", weights_only=False), "")
    return found


def compare_runs(original: Job, rerun: Job) -> tuple[bool, str]:
    """Whether the rerun reproduced the original exactly, and one line saying so: a fine-tune's
    mIoU and its last checkpoint's tensors, a pretraining's encoder tensors."""
    import torch

    checkpoint = Path("checkpoints") / ("encoder.pt" if original.kind == "pretrain" else "last.pt")
    a, b = checkpoint_tensors(original.run_dir / checkpoint), checkpoint_tensors(rerun.run_dir / checkpoint)
    differ = sorted(k for k in a.keys() | b.keys()
                    if k not in a or k not in b or not torch.equal(a[k], b[k]))
    parts = []
    same = not differ
    if original.kind == "finetune":
        miou = [json.loads((job.run_dir / "metrics.json").read_text())["miou"] for job in (original, rerun)]
        same = same and miou[0] == miou[1]
        parts.append(f"mIoU {miou[0]!r} then {miou[1]!r}")
    parts.append(f"{len(a)} tensors of {checkpoint.name} equal" if not differ else
                 f"{len(differ)} of {len(a)} tensors of {checkpoint.name} differ ({', '.join(differ[:3])}"
                 f"{', ...' if len(differ) > 3 else ''})")
    verdict = "reproduced exactly" if same else "NOT reproduced"
    return same, f"{original.name}: {verdict}: {'; '.join(parts)} ({rerun.run_dir})"


def verify(jobs: list[Job], names: list[str], out: Path, launch: Callable[[Job], object] = start_process,
           say: Callable[[str], None] = print) -> int:
    """Rerun the finished jobs `names` (verify_job) one at a time and compare them with the
    originals (compare_runs); 0 if every one reproduced exactly, 1 if not."""
    by_name = {job.name: job for job in jobs}
    for name in names:
        if name not in by_name or by_name[name].kind == "preprocess":
            raise BenchError(f"--verify {name}: not a run of this plan (a fine-tune such as "
                             f"{next(j.name for j in jobs if j.kind == 'finetune')}, or a pretraining)")
        if not by_name[name].finished():
            raise BenchError(f"--verify {name}: {by_name[name].run_dir} has not finished; run the benchmark first")
    reruns = [verify_job(by_name[name], out) for name in names]
    for rerun in reruns:
        if rerun.run_dir.exists():
            shutil.rmtree(rerun.run_dir)  # a verification starts from nothing
    status = run_jobs(reruns, 1, launch=launch, say=say)
    reproduced = True
    for name, rerun in zip(names, reruns, strict=True):
        if status[rerun.name] != "done":
            say(f"{name}: the rerun failed (its log: {rerun.log})")
            reproduced = False
            continue
        same, line = compare_runs(by_name[name], rerun)
        say(line)
        reproduced = reproduced and same
    return 0 if reproduced else 1


# ----------------------------------------------------------------------------------- the results
def read_results(jobs: list[Job], status: dict[str, str], steps: int) -> tuple[
        dict[tuple[str, float, int], float], dict[tuple[str, float, int], dict[str, float | None]]]:
    """Every finished fine-tune's mIoU (0..1) and IoU per class (0..1, None for a class absent
    from the held-out scans), each from its metrics.json, read once. A run the record held keeps
    its entry (its mIoU here, its IoU per class in run_records); a run without `iou_per_class` has
    no IoU per class."""
    miou, class_iou = {}, {}
    for job in jobs:
        if job.kind != "finetune" or status.get(job.name) not in ("done", "reused"):
            continue
        key = (job.row, job.fraction, job.seed)
        if job.recorded is not None:
            miou[key] = float(job.recorded["miou"])
            continue
        path = job.run_dir / "metrics.json"
        metrics = json.loads(path.read_text())
        if metrics.get("step") != steps:
            raise BenchError(f"{path}: the run ended at step {metrics.get('step')}, not {steps}")
        miou[key] = float(metrics["miou"])
        if metrics.get("iou_per_class") is not None:
            class_iou[key] = metrics["iou_per_class"]
    return miou, class_iou


def check_subsets(jobs: list[Job], status: dict[str, str]) -> int:
    """Every row of one (fraction, seed) trained on the same scans; returns how many groups were compared."""
    groups: dict[tuple[float, int], dict[str, str]] = {}
    for job in jobs:
        if job.kind == "finetune" and status.get(job.name) in ("done", "reused"):
            groups.setdefault((job.fraction, job.seed), {})[job.name] = subset_digest(job)
    for (fraction, seed), subsets in groups.items():
        first = next(iter(subsets.values()))
        differ = [name for name, text in subsets.items() if text != first]
        if differ:
            raise BenchError(f"{frac_key(fraction)}% seed {seed}: the runs {', '.join(subsets)} did not train on the "
                             f"same labelled scans (label_subset.txt differs in {', '.join(differ)})")
    return len(groups)


def subset_digest(job: Job) -> str:
    """The sha256 of a finished fine-tune's label_subset.txt (the labelled scans it trained on),
    from its folder or its record entry."""
    if job.recorded is not None:
        return job.recorded["label_subset_sha256"]
    return hashlib.sha256((job.run_dir / "label_subset.txt").read_bytes()).hexdigest()


def run_records(jobs: list[Job], miou: dict[tuple[str, float, int], float], out: Path,
                cpu: str | None = None, class_iou: dict | None = None) -> list[dict]:
    """One entry per measured fine-tune: row, fraction, seed, mIoU (0..1, as metrics.json), its
    folder under `out`, the code that made it (its code.json), the digest of its labelled scans,
    the CPU and OpenBLAS kernels it ran on (`cpu`, machine_info's) and, where `class_iou`
    (read_results) has them, its IoU per class; a run the record held (carry_recorded) keeps its
    entry."""
    records = []
    for job in jobs:
        key = (job.row, job.fraction, job.seed)
        if job.kind == "finetune" and key in miou:
            if job.recorded is not None:
                records.append(dict(job.recorded))
                continue
            code = recorded_code(job.run_dir) or {}
            entry = {"row": job.row, "fraction": job.fraction, "seed": job.seed, "miou": miou[key],
                     "run_dir": job.run_dir.relative_to(out).as_posix(), "commit": code.get("commit"),
                     "code_hash": code.get("code_hash"), "dirty": code.get("dirty"),
                     "label_subset_sha256": subset_digest(job), "cpu": cpu}
            if class_iou and key in class_iou:
                entry["iou_per_class"] = class_iou[key]
            records.append(entry)
    return records


# the settings a record's runs must share with this benchmark to stand for its runs (the paths of
# the data and the output may differ: another worktree or machine)
CARRIED_SETTINGS = ("train_sequences", "val_sequence", "val_scans", "pretrain_steps", "pretrain_set", "preprocess_set",
                    "finetune_steps", "voxel_size")


def carry_recorded(jobs: list[Job], record_path: Path, s: Settings, val_scans: int,
                   cpu: str | None = None) -> list[str]:
    """Let the record's runs stand for this benchmark's: a long protocol then continues across
    machines and sessions from the record in the repository, whose run folders are gone. A run
    entry counts when the record has this benchmark's settings (CARRIED_SETTINGS and the label
    config's name), the entry this code's hash, and its folder here holds no finished run; it
    marks the fine-tune finished (Job.recorded). A pretraining whose fine-tunes are all finished
    is marked too, so it is not made again for nothing. Returns one line per reason a record or
    run does not count (none when the record does not exist), and one for what was carried,
    naming the CPUs it ran on where they are not `cpu` (this machine's)."""
    if not record_path.is_file():
        return []
    record = load_record(record_path)
    mine = dict(summary_settings(s, 0, val_scans), label_config=s.label_config.name)
    theirs = dict(record["settings"], label_config=Path(record["settings"].get("label_config", "")).name)
    differ = [k for k in (*CARRIED_SETTINGS, "label_config") if theirs.get(k, [] if k.endswith("_set") else None)
              != mine[k]]
    if differ:
        return [f"{record_path}: not carried over, its settings differ ({', '.join(differ)})"]
    entries = {(r["row"], float(r["fraction"]), int(r["seed"])): r for r in record["runs"]}
    lines, carried = [], 0
    for job in jobs:
        entry = entries.get((job.row, job.fraction, job.seed)) if job.kind == "finetune" else None
        if entry is None or job.finished():
            continue
        if entry.get("code_hash") != s.code["code_hash"] or "label_subset_sha256" not in entry:
            lines.append(f"{job.name}: the record's run is not carried over (made by "
                         f"{describe_code(entry) if entry.get('code_hash') else 'unrecorded code'}"
                         f"{'' if 'label_subset_sha256' in entry else ', its labelled scans unrecorded'})")
            continue
        job.recorded = entry
        carried += 1
    for job in jobs:
        if job.kind == "pretrain" and not job.finished():
            needed_by = [j for j in jobs if job.name in j.after]
            if needed_by and all(j.finished() for j in needed_by):
                job.recorded = {}
    if carried:
        cpus = sorted({str(job.recorded.get("cpu")) for job in jobs if job.recorded})
        other = "" if cpus == [str(cpu)] else (f"; made on {', '.join(cpus)}, this is {cpu}: a run repeats bit for "
                                               "bit only on its kind of CPU")
        lines.append(f"{carried} fine-tune{'s' if carried != 1 else ''} carried over from {record_path} "
                     f"(same settings, same code{other})")
    return lines


def paired_interval(differences: list[float], level: float = CI_LEVEL) -> tuple[float, list[float] | None]:
    """The mean of paired differences and its `level` confidence interval from the t
    distribution: mean -/+ t_{(1+level)/2, n-1} * sd / sqrt(n), sd with n - 1 degrees of freedom
    (the paired t interval; each difference is one seed's run against scratch's run of the same
    seed). With one difference the interval is undefined: None."""
    n = len(differences)
    mean = sum(differences) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return mean, [mean - half, mean + half]


def summarize(miou: dict[tuple[str, float, int], float], cells: dict[str, dict[float, list[int]]]) -> dict:
    """The table (percent): per row and fraction the per-seed values and, once every planned seed
    finished, their mean, and against scratch the mean of the per-seed differences with its paired
    95% interval (paired_interval); a cell lacking a seed has mean, delta and ci None (never a
    mean over fewer seeds). Then issue 20's three targets: ISCC against scratch at 1% (or the
    smallest fraction; `target`), at every fraction (ahead_check) and against every ablation row
    (ablation_check)."""
    table: dict[str, dict[str, dict]] = {}
    for row, by_fraction in cells.items():
        table[row] = {}
        for fraction, seeds in by_fraction.items():
            per_seed = {seed: 100 * miou[(row, fraction, seed)] for seed in seeds if (row, fraction, seed) in miou}
            complete = len(per_seed) == len(seeds)
            cell: dict = {"n": len(seeds), "seeds": {str(k): v for k, v in per_seed.items()},
                          "mean": sum(per_seed.values()) / len(seeds) if complete else None,
                          "delta": None, "ci": None, "seed_deltas": {}}
            if row != SCRATCH:
                deltas = {seed: value - 100 * miou[(SCRATCH, fraction, seed)]
                          for seed, value in per_seed.items() if (SCRATCH, fraction, seed) in miou}
                cell["seed_deltas"] = {str(k): v for k, v in deltas.items()}
                if len(deltas) == len(seeds):
                    cell["delta"], cell["ci"] = paired_interval(list(deltas.values()))
            table[row][frac_key(fraction)] = cell
    fractions = sorted({f for by_fraction in cells.values() for f in by_fraction})
    fraction = TARGET_FRACTION if TARGET_FRACTION in fractions else min(fractions)
    target: dict = {"fraction": fraction, "threshold": TARGET_DELTA, "min_seeds": TARGET_SEEDS, "level": CI_LEVEL,
                    "seeds": None, "mean_delta": None, "ci": None, "met": None}
    cell = table.get(ISCC, {}).get(frac_key(fraction))
    if cell is not None and cell["delta"] is not None:
        target.update(seeds=cell["n"], mean_delta=cell["delta"], ci=cell["ci"])
        target["met"] = bool(cell["delta"] >= TARGET_DELTA and cell["n"] >= TARGET_SEEDS
                             and cell["ci"] is not None and cell["ci"][0] > 0)
    return {"table": table, "target": target, "ahead": ahead_check(table, cells),
            "ablations": ablation_check(table, cells, fraction)}


def ahead_check(table: dict, cells: dict[str, dict[float, list[int]]]) -> dict:
    """The target "ISCC is ahead of scratch at every fraction" (the slides: +6.2 / +5.0 / +1.3 /
    +1.8): ISCC's mean paired difference to scratch at each fraction it runs (None until every seed
    of both rows finished there); met when every one is above 0, None until all are measured."""
    deltas = {frac_key(f): table[ISCC][frac_key(f)]["delta"] for f in sorted(cells.get(ISCC, {}))}
    met = (None if not deltas or None in deltas.values()
           else all(delta > 0 for delta in deltas.values()))
    return {"deltas": deltas, "met": met}


def ablation_check(table: dict, cells: dict[str, dict[float, list[int]]], fraction: float) -> dict:
    """The target "the full method at least matches every ablation row at 1%" (the slides'
    ordering: each part adds): for each ablation row at `fraction`, the mean over that row's seeds
    of ISCC's run minus the row's run of the same seed (same labelled scans and batch order), with
    its paired interval (paired_interval); None until both runs of every seed finished. Met when
    every mean is >= 0, None until every row is measured or where no ablation row runs there."""
    full = table.get(ISCC, {}).get(frac_key(fraction), {"seeds": {}})["seeds"]
    rows: dict[str, dict] = {}
    for row, by_fraction in cells.items():
        if row in (SCRATCH, ISCC) or fraction not in by_fraction:
            continue
        mine, seeds = table[row][frac_key(fraction)]["seeds"], by_fraction[fraction]
        differences = [full[str(seed)] - mine[str(seed)] for seed in seeds if str(seed) in full and str(seed) in mine]
        delta, ci = paired_interval(differences) if len(differences) == len(seeds) else (None, None)
        rows[row] = {"n": len(seeds), "delta": delta, "ci": ci}
    met = (None if not rows or any(cell["delta"] is None for cell in rows.values())
           else all(cell["delta"] >= 0 for cell in rows.values()))
    return {"fraction": fraction, "rows": rows, "met": met}


def class_differences(runs: list[dict], cells: dict[str, dict[float, list[int]]],
                      fraction: float) -> tuple[list[str], dict[str, dict[str, float | None]]]:
    """Each row's IoU difference to No Pre-training per class at `fraction`, in points of IoU
    (%): the mean over the row's seeds there of its run's IoU minus scratch's run of the same seed
    (the runs' `iou_per_class`). A row is left out unless every one of its seeds, and scratch's
    run of it, kept IoU per class (never a mean over fewer seeds); a class absent (None) from any
    of those runs is None. Returns the classes, in the runs' order, and the rows' differences."""
    per_class = {(r["row"], float(r["fraction"]), int(r["seed"])): r["iou_per_class"]
                 for r in runs if r.get("iou_per_class") is not None}
    classes = list(dict.fromkeys(name for values in per_class.values() for name in values))
    differences: dict[str, dict[str, float | None]] = {}
    for row, by_fraction in cells.items():
        seeds = by_fraction.get(fraction)
        if row == SCRATCH or not seeds:
            continue
        pairs = [(per_class.get((row, fraction, seed)), per_class.get((SCRATCH, fraction, seed))) for seed in seeds]
        if any(mine is None or theirs is None for mine, theirs in pairs):
            continue
        differences[row] = {}
        for name in classes:
            values = [(mine.get(name), theirs.get(name)) for mine, theirs in pairs]
            differences[row][name] = (None if any(a is None or b is None for a, b in values)
                                      else 100 * sum(a - b for a, b in values) / len(values))
    return classes, differences


def format_class_delta(value: float | None) -> str:
    """'+1.2', '-' for None; a difference that rounds to zero is '+0.0', never '-0.0'."""
    return "-" if value is None else f"{round(value, 1) or 0.0:+.1f}"


def class_table(first: str, classes: list[str], rows: list[tuple[str, dict[str, float | None], list[str]]],
                after: list[str] | None = None) -> list[str]:
    """A markdown table of differences per class (format_class_delta): the column `first`, one
    column per class, then the columns `after`; each row is (its first cell, its differences by
    class, its cells after), a class it lacks is '-'."""
    after = after or []
    return ["| " + " | ".join([first, *classes, *after]) + " |", "|---" * (1 + len(classes) + len(after)) + "|",
            *("| " + " | ".join([label, *(format_class_delta(by_class.get(name)) for name in classes), *cells]) + " |"
              for label, by_class, cells in rows)]


def format_delta(cell: dict) -> str:
    """'+3.1 [-0.2, +6.4]': the mean difference to scratch and its interval ('n/a' for one seed)."""
    ci = "n/a" if cell["ci"] is None else f"{cell['ci'][0]:+.1f}, {cell['ci'][1]:+.1f}"
    return f"{cell['delta']:+.1f} [{ci}]"


def format_cell(cell: dict | None, row: str) -> str:
    """A table cell: '' where the row does not run, '-' where a seed is missing, else the mean,
    (the difference to scratch and its interval) and n, the seeds."""
    if cell is None:
        return ""
    if cell["mean"] is None:
        return "-"
    if row == SCRATCH or cell["delta"] is None:
        return f"{cell['mean']:.1f} (n={cell['n']})"
    return f"{cell['mean']:.1f} ({format_delta(cell)}, n={cell['n']})"


def verdict(target: dict) -> str:
    """The target line: ISCC - scratch at the target fraction, its interval, met or not and why."""
    f = frac_key(target["fraction"])
    goal = (f"target (>= +{target['threshold']:.1f} mean over >= {target['min_seeds']} seeds, "
            f"{100 * target['level']:g}% CI above 0)")
    if target["met"] is None:
        return f"At {f}% labels, ISCC - scratch not measured (needs rows scratch and iscc, every seed finished): " \
               f"{goal} not checked"
    n = target["seeds"]
    ci = "n/a" if target["ci"] is None else f"[{target['ci'][0]:+.2f}, {target['ci'][1]:+.2f}]"
    line = (f"At {f}% labels, ISCC - scratch = {target['mean_delta']:+.2f} mIoU (mean of {n} "
            f"seed{'s' if n != 1 else ''}, {100 * target['level']:g}% CI {ci}): {goal} ")
    if target["met"]:
        return line + "met"
    why = []
    if target["mean_delta"] < target["threshold"]:
        why.append(f"mean below +{target['threshold']:.1f}")
    if n < target["min_seeds"]:
        why.append(f"{n} seed{'s' if n != 1 else ''}, fewer than {target['min_seeds']}")
    if target["ci"] is None:
        why.append("no interval from one seed")
    elif target["ci"][0] <= 0:
        why.append("CI not above 0")
    return line + "NOT met: " + ", ".join(why)


def ahead_verdict(ahead: dict) -> str:
    """The line of the target "ahead at every fraction" (ahead_check): each fraction's ISCC -
    scratch, met or not and why."""
    deltas, goal = ahead["deltas"], "target (ahead at every fraction) "
    if not deltas:
        return "ISCC - scratch at every fraction run: no ISCC row: " + goal + "not checked"
    measured = ", ".join(f"{key}% {'-' if delta is None else f'{delta:+.1f}'}" for key, delta in deltas.items())
    line = f"ISCC - scratch at every fraction run: {measured}: " + goal
    if ahead["met"] is None:
        return line + f"not checked: {', '.join(f'{key}%' for key, delta in deltas.items() if delta is None)} " \
                      "not measured"
    behind = [f"{key}%" for key, delta in deltas.items() if delta <= 0]
    return line + ("met" if ahead["met"] else f"NOT met: not ahead at {', '.join(behind)}")


def ablation_verdict(ablations: dict) -> str:
    """The line of the target "the full method at least matches every ablation row"
    (ablation_check): ISCC minus each ablation row with its interval, met or not and why."""
    rows, f = ablations["rows"], frac_key(ablations["fraction"])
    head = f"{ROWS[ISCC].name} - each ablation row at {f}% (paired over the row's seeds): "
    goal = "target (the full method at least matches every ablation row) "
    if not rows:
        return head + "no ablation row: " + goal + "not checked"
    parts = [f"{ROWS[row].name} " + ("-" if cell["delta"] is None else f"{format_delta(cell)} (n={cell['n']})")
             for row, cell in rows.items()]
    line = head + ", ".join(parts) + ": " + goal
    if ablations["met"] is None:
        missing = [ROWS[row].name for row, cell in rows.items() if cell["delta"] is None]
        return line + f"not checked: {', '.join(missing)} not measured"
    below = [ROWS[row].name for row, cell in rows.items() if cell["delta"] < 0]
    return line + ("met" if ablations["met"] else f"NOT met: below {', '.join(below)}")


def verdicts(summary: dict) -> list[str]:
    """Issue 20's three targets, a line each: every fraction (ahead_verdict), every ablation row
    (ablation_verdict), and last the headline, ISCC - scratch at 1% (verdict)."""
    return [ahead_verdict(summary["ahead"]), ablation_verdict(summary["ablations"]), verdict(summary["target"])]


def format_table(summary: dict, cells: dict[str, dict[float, list[int]]], runs: list[dict] | None = None) -> list[str]:
    """The printed table (a cell per row and fraction: format_cell), then every seed's mIoU and
    its difference to scratch, blank where a row does not run; then, where the runs kept them,
    each row's difference to scratch per class at the target fraction (class_differences of `runs`,
    the record's entries)."""
    fractions = sorted({f for by_fraction in cells.values() for f in by_fraction})
    seeds = sorted({seed for by_fraction in cells.values() for s in by_fraction.values() for seed in s})
    width = 30
    lines = [f"{'method':<16}" + "".join(f"{frac_key(f) + '%':>{width}}" for f in fractions)]
    lines.append("-" * len(lines[0]))
    for row in cells:
        texts = [format_cell(summary["table"][row].get(frac_key(f)), row) for f in fractions]
        lines.append(f"{ROWS[row].name:<16}" + "".join(f"{text:>{width}}" for text in texts))
    width = 16
    lines.append("")
    lines.append("per seed (mIoU %, difference to No Pre-training):")
    lines.append(f"{'method':<16}{'seed':>5}" + "".join(f"{frac_key(f) + '%':>{width}}" for f in fractions))
    for row in cells:
        for seed in seeds:
            texts = []
            for fraction in fractions:
                cell = summary["table"][row].get(frac_key(fraction))
                if cell is None or seed not in cells[row][fraction]:
                    texts.append("")
                    continue
                value, delta = cell["seeds"].get(str(seed)), cell["seed_deltas"].get(str(seed))
                texts.append(("-" if value is None else f"{value:.1f}") + ("" if delta is None else f" ({delta:+.1f})"))
            if any(texts):
                lines.append(f"{ROWS[row].name:<16}{seed:>5}" + "".join(f"{text:>{width}}" for text in texts))
    fraction = summary["target"]["fraction"]
    classes, differences = class_differences(runs or [], cells, fraction)
    if differences:
        widths = [max(len(name) + 1, 7) for name in classes]
        lines += ["", f"per class at {frac_key(fraction)}% (points of IoU %, the mean difference to No Pre-training "
                  "over the row's seeds):",
                  f"{'method':<16}" + "".join(f"{name:>{w}}" for name, w in zip(classes, widths, strict=True))]
        for row, by_class in differences.items():
            lines.append(f"{ROWS[row].name:<16}" + "".join(f"{format_class_delta(by_class[name]):>{w}}"
                                                          for name, w in zip(classes, widths, strict=True)))
    return lines


# --------------------------------------------------------------------- the record, the results page
def cells_json(cells: dict[str, dict[float, list[int]]]) -> dict[str, dict[str, list[int]]]:
    return {row: {frac_key(f): seeds for f, seeds in by_fraction.items()} for row, by_fraction in cells.items()}


def cells_from_json(cells: dict[str, dict[str, list[int]]]) -> dict[str, dict[float, list[int]]]:
    return {row: {float(f): list(seeds) for f, seeds in by_fraction.items()} for row, by_fraction in cells.items()}


def record_problem(summary: dict) -> str | None:
    """Why a summary may not be the repository's record, or None: every planned run measured, by
    one code, committed and clean (the issue: a recorded cell reproduces when rerun at its commit)."""
    if summary["failed"]:
        n = len(summary["failed"])
        return f"{n} job{'s' if n != 1 else ''} failed or skipped"
    problem = commit_problem(summary["code"])
    if problem is not None:
        return problem
    other = sorted({r["run_dir"] for r in summary["runs"] if r["code_hash"] != summary["code"]["code_hash"]})
    if other:
        return f"{len(other)} run{'s were' if len(other) != 1 else ' was'} made by other code ({', '.join(other)})"
    return None


def render_markdown(record: dict, source: str = "benchmarks/results/label_efficiency.json") -> list[str]:
    """The results page's table from a record (lines, no indentation): the cells recomputed from its
    runs (summarize), a 'closest public method' column, every seed, each row's difference to
    scratch per class at the target fraction where the runs kept it (class_differences), the
    verdicts (verdicts) and where and with which code it was measured."""
    settings, code, machine = record["settings"], record["code"], record["machine"]
    cells = cells_from_json(settings["cells"])
    miou = {(r["row"], r["fraction"], r["seed"]): r["miou"] for r in record["runs"]}
    summary = summarize(miou, cells)
    fractions = sorted({f for by_fraction in cells.values() for f in by_fraction})
    columns = [frac_key(f) + "%" for f in fractions]
    lines = [f"<!-- generated by `python benchmarks/label_efficiency.py --render-readme` from {source}: "
             "do not edit -->",
             "| method | closest public method | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for row in cells:
        texts = [format_cell(summary["table"][row].get(frac_key(f)), row) for f in fractions]
        lines.append(f"| {ROWS[row].name} | {ROWS[row].closest} | " + " | ".join(texts) + " |")
    lines += ["", f"mIoU (%) on held-out sequence {settings['val_sequence']} ({settings['val_scans']} scans), the mean "
              "over n seeds; in parentheses the mean over the same seeds of the difference to No Pre-training "
              f"(same labelled scans and batch order) and its paired {100 * CI_LEVEL:g}% t interval. Every seed "
              "(seed: mIoU):", "",
              "| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row in cells:
        texts = []
        for fraction in fractions:
            cell = summary["table"][row].get(frac_key(fraction))
            texts.append("" if cell is None else
                         ", ".join(f"{seed}: {cell['seeds'][str(seed)]:.1f}" if str(seed) in cell["seeds"]
                                   else f"{seed}: -" for seed in cells[row][fraction]))
        lines.append(f"| {ROWS[row].name} | " + " | ".join(texts) + " |")
    fraction = summary["target"]["fraction"]
    classes, differences = class_differences(record["runs"], cells, fraction)
    if differences:
        lines += ["", f"IoU per class at {frac_key(fraction)}%: each row's difference to No Pre-training in points "
                  "of IoU (%), the mean over the row's seeds (same labelled scans):", "",
                  *class_table("method", classes, [(ROWS[row].name, by_class, []) for row, by_class in
                                                   differences.items()])]
    commit = "no commit" if code["commit"] is None else f"commit `{code['commit'][:7]}`"
    gpu = f" ({machine['gpu']})" if machine.get("gpu") else ""
    cpus = sorted({str(r.get("cpu")) for r in record["runs"]})
    if len(cpus) > 1:
        legend = "; None: not recorded" if "None" in cpus else ""
        lines += ["", f"The runs come from {len(cpus)} kinds of CPU ({'; '.join(cpus)}{legend}): a run "
                  "repeats bit for bit only on its kind, so a cell's seeds may mix machines."]
    if not record.get("complete", True):
        lines += ["", f"**In progress**: {len(record['runs'])} of "
                  f"{sum(len(seeds) for by_fraction in cells.values() for seeds in by_fraction.values())} fine-tunes "
                  "measured so far; the same command at the same commit continues it from this record."]
    for line in verdicts(summary):
        lines += ["", line]
    lines += ["",
              f"Measured at {commit} (code hash `{code['code_hash'][:12]}`{', dirty' if code['dirty'] else ''}): "
              f"pretraining {describe_pretraining(settings)}, fine-tuning {settings['finetune_steps']} steps "
              f"(batch 1), voxel {settings['voxel_size']:g} m, training sequences "
              f"{' '.join(settings['train_sequences'])}; {machine['platform']}, {describe_cpus(machine)}, "
              f"Python {machine['python']}, torch {machine['torch']}, MinkowskiEngine {machine['minkowskiengine']}, "
              f"device {machine['device']}{gpu}; the invocation that wrote this record took "
              f"{record['elapsed_s'] / 60:.0f} min (it reuses finished runs)."]
    return lines


def describe_pretraining(settings: dict) -> str:
    """'500 steps', '500 steps with KEY=VALUE ...', then '; groups with KEY=VALUE ...' (a record
    before --pretrain-set or --preprocess-set has none)."""
    changes, groups = settings.get("pretrain_set", []), settings.get("preprocess_set", [])
    return (f"{settings['pretrain_steps']} steps" + (f" with {' '.join(changes)}" if changes else "")
            + (f"; groups with {' '.join(groups)}" if groups else ""))


def study_pair(settings: dict, source: str) -> dict[str, dict[float, list[int]]]:
    """A study's cells of No Pre-training and Ours (ISCC) at the target fraction (1%); a record
    without both is an error naming it."""
    cells = cells_from_json(settings["cells"])
    if TARGET_FRACTION not in cells.get(ISCC, {}) or TARGET_FRACTION not in cells.get(SCRATCH, {}):
        raise BenchError(f"{source}: no {ROWS[ISCC].name} and {ROWS[SCRATCH].name} runs at "
                         f"{frac_key(TARGET_FRACTION)}% to compare")
    return {row: {TARGET_FRACTION: cells[row][TARGET_FRACTION]} for row in (SCRATCH, ISCC)}


def study_row(settings: dict, code: dict, runs: list[dict], pair: dict[str, dict[float, list[int]]],
              source: str) -> str:
    """One row of the studies table: a record's pretraining, scratch and ISCC in `pair` (study_pair:
    the cells compared, at the target fraction) over the same seeds, the paired difference with its
    interval, every seed's difference, the commit and the record's path."""
    fraction = TARGET_FRACTION
    table = summarize({(r["row"], r["fraction"], r["seed"]): r["miou"] for r in runs}, pair)["table"]
    scratch, iscc = (table[row][frac_key(fraction)] for row in (SCRATCH, ISCC))
    means = ["-" if cell["mean"] is None else f"{cell['mean']:.1f} (n={cell['n']})" for cell in (scratch, iscc)]
    delta = "-" if iscc["delta"] is None else format_delta(iscc)
    per_seed = ", ".join(f"{seed}: {value:+.1f}" for seed, value in iscc["seed_deltas"].items())
    commit = "no commit" if code["commit"] is None else f"`{code['commit'][:7]}`{' (dirty)' if code['dirty'] else ''}"
    return (f"| {describe_pretraining(settings)} | {means[0]} | {means[1]} | {delta} | {per_seed} | {commit} | "
            f"{source} |")


def render_studies(records: list[tuple[str, dict]]) -> list[str]:
    """The results page's studies table (lines) from (root-relative path, record) pairs: the
    recorded protocol first, then each method change tried (study_row); then, where any record
    kept them, ISCC - scratch per class for each (class_differences)."""
    rows, by_class = [], []
    for source, record in records:
        try:
            pair = study_pair(record["settings"], source)
            rows.append(study_row(record["settings"], record["code"], record["runs"], pair, source))
            differences = class_differences(record["runs"], pair, TARGET_FRACTION)[1]
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchError(f"{source}: not a label-efficiency record ({type(exc).__name__}: {exc})") from exc
        by_class.append((describe_pretraining(record["settings"]), differences.get(ISCC, {}), source))
    classes = list(dict.fromkeys(name for _, differences, _ in by_class for name in differences))
    lines = [f"<!-- generated by `python benchmarks/label_efficiency.py --render-readme` from "
             f"{', '.join(source for source, _ in records)}: do not edit -->",
             "| pretraining | No Pre-training | Ours (ISCC) | ISCC - scratch [95% CI] | per seed | commit | record |",
             "|---|---|---|---|---|---|---|", *rows, "",
             f"mIoU (%) at {frac_key(TARGET_FRACTION)}% labels on the held-out sequence, the mean over n seeds, "
             "fine-tuning identical in every row; per seed: ISCC - scratch with the same labelled scans."]
    if classes:
        lines += ["", *class_table("pretraining", classes, [(pretraining, differences, [source])
                                                            for pretraining, differences, source in by_class],
                                   after=["record"])]
        lines += ["", f"ISCC - scratch per class at {frac_key(TARGET_FRACTION)}%, in points of IoU (%), the mean "
                  "over the same seeds; -: not kept (a record written before the runs' IoU per class was)."]
    return lines


def load_record(path: Path) -> dict:
    record = read_record(path, "python benchmarks/label_efficiency.py --recorded")
    missing = [key for key in ("settings", "code", "machine", "runs", "elapsed_s") if key not in record]
    if missing:
        raise BenchError(f"{path}: not a label-efficiency record (no {', '.join(missing)})")
    return record


def render_readme_file(record_path: Path, readme_path: Path, studies: Path) -> int:
    """Rewrite the results page's two label-efficiency blocks: the table from the record, and the
    studies table from it and every study record in `studies` (by file name). Every record is
    read and both blocks made before the page is written (atomically), so a bad record leaves
    the page as it was. Returns the number of studies."""
    records = [(root_relative(path), load_record(path)) for path in [record_path, *sorted(studies.glob("*.json"))]]
    try:
        table = render_markdown(records[0][1], records[0][0])
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"{record_path}: not a label-efficiency record ({type(exc).__name__}: {exc})") from exc
    studies_table = render_studies(records)
    try:
        page = readme_path.read_text()
    except OSError as exc:
        raise BenchError(f"{readme_path}: cannot read it ({exc.strerror})") from exc
    page = replace_block(page, table, readme_path, TABLE_BEGIN, TABLE_END)
    atomic.write_text(readme_path, replace_block(page, studies_table, readme_path, STUDIES_BEGIN, STUDIES_END))
    return len(records) - 1


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recorded", action="store_true",
                        help="the recorded protocol: seeds 0-4 at 1%% and 2%%, 0-2 at 5%% and 10%%, the ablation "
                             "rows at 1%% and 10%% with seeds 0-2; writes the record (--record)")
    parser.add_argument("--fractions", nargs="+", type=float,
                        help="label fractions in percent of the training scans (default: 1 2 5 10)")
    parser.add_argument("--seeds", nargs="+", type=int, help="fine-tuning seeds at every fraction (default: 0 1)")
    parser.add_argument("--seeds-at", nargs="+", action="append", metavar="FRACTION SEED",
                        help="the seeds at one fraction, e.g. --seeds-at 1 0 1 2 3 4 (repeatable)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS) + list(PRESETS), metavar="ROW",
                        help="scratch, iscc (default); ablation rows occ2 occ8 occ16 occ32 local global full100 "
                             "full200; 'ablation' = all of them (scratch is always run: the deltas need it)")
    parser.add_argument("--ablation-fractions", nargs="+", type=float,
                        help="the fractions the ablation rows run at (default: every fraction)")
    parser.add_argument("--ablation-seeds", nargs="+", type=int,
                        help="the ablation rows' seeds (default: the fraction's)")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="SemanticKITTI-format root (default %(default)s, generated when missing)")
    parser.add_argument("--train-sequences", nargs="+", default=["00", "01", "02", "03"],
                        help="sequences to pretrain and fine-tune on (default: 00 01 02 03)")
    parser.add_argument("--val-sequence", default="04", help="held-out sequence (default: 04)")
    parser.add_argument("--label-config", default=str(SYNTHETIC_LABELS), help="class mapping (default: synthetic)")
    parser.add_argument("--pretrain-steps", type=int, default=DEFAULT_PRETRAIN_STEPS,
                        help="steps of each pretraining, batch 2 pairs (default %(default)s)")
    parser.add_argument("--pretrain-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="a method change under study: config overrides of every pretraining, after the row's "
                             "(e.g. data.train.mask_ratio=0.5); recorded in the settings")
    parser.add_argument("--preprocess-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="a change of the groups under study: preprocessing overrides (configs/preprocess/"
                             "default.yaml, e.g. ground_patches.size=2.0); the groups go to OUT/groups and every "
                             "pretraining reads them from there; recorded in the settings")
    parser.add_argument("--finetune-steps", type=int, default=DEFAULT_FINETUNE_STEPS,
                        help="steps of every fine-tune, batch 1 (default %(default)s)")
    parser.add_argument("--voxel-size", type=float, default=0.2,
                        help="metres, pretraining and fine-tuning (default 0.2)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (every run)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one per CPU core)")
    parser.add_argument("--out", default="runs/bench_label_efficiency", help="output folder (default %(default)s)")
    parser.add_argument("--record", type=Path,
                        help=f"the record JSON: written after a complete run made by committed code (default with "
                             f"--recorded: {RECORD.relative_to(ROOT)}), read by --render-readme (default the same)")
    parser.add_argument("--verify", nargs="+", metavar="NAME",
                        help="rerun these finished runs of the plan (e.g. scratch/1pct_seed0, pretrain_iscc) into "
                             "OUT/verify/ and check they reproduce exactly")
    parser.add_argument("--render-readme", action="store_true",
                        help="rewrite the label-efficiency table in docs/results.md from the record, and its "
                             "studies table from the record and --studies, and exit (runs nothing)")
    parser.add_argument("--studies", type=Path, default=STUDIES,
                        help="the folder of study records (one --record each) that --render-readme tabulates "
                             f"(default: {STUDIES.relative_to(ROOT)})")
    parser.add_argument("--readme", type=Path, default=RESULTS_PAGE,
                        help="the page that --render-readme rewrites (default: docs/results.md)")
    args = parser.parse_args(argv)
    chosen = [flag for flag, value in (("--fractions", args.fractions), ("--seeds", args.seeds),
                                       ("--seeds-at", args.seeds_at), ("--rows", args.rows),
                                       ("--ablation-fractions", args.ablation_fractions),
                                       ("--ablation-seeds", args.ablation_seeds)) if value is not None]
    if args.recorded and chosen:
        parser.error(f"--recorded fixes the fractions, seeds and rows: drop {' '.join(chosen)}")
    if args.recorded:
        args.rows, args.seeds_by_fraction = PRESETS["ablation"], {f: list(s) for f, s in RECORDED_SEEDS.items()}
        args.ablation_fractions, args.ablation_seeds = RECORDED_ABLATION_FRACTIONS, RECORDED_ABLATION_SEEDS
        args.record = args.record or RECORD
    else:
        fractions = list(dict.fromkeys(args.fractions or DEFAULT_FRACTIONS))
        if any(not 0 < f <= 100 for f in fractions):
            parser.error("--fractions: percentages in (0, 100]")
        args.seeds_by_fraction = {f: sorted(set(args.seeds or DEFAULT_SEEDS)) for f in fractions}
        for values in args.seeds_at or []:
            try:
                fraction, seeds = float(values[0]), sorted({int(v) for v in values[1:]})
            except ValueError:
                parser.error(f"--seeds-at {' '.join(values)}: a fraction, then integer seeds")
            if fraction not in args.seeds_by_fraction or not seeds:
                parser.error(f"--seeds-at {' '.join(values)}: a fraction of --fractions, then at least one seed")
            args.seeds_by_fraction[fraction] = seeds
        args.rows = args.rows or [SCRATCH, ISCC]
        if args.ablation_fractions is not None and not set(args.ablation_fractions) <= set(fractions):
            parser.error("--ablation-fractions: fractions of --fractions")
    if args.jobs < 1 or args.pretrain_steps < 1 or args.finetune_steps < 1 or args.voxel_size <= 0:
        parser.error("--jobs, --pretrain-steps, --finetune-steps and --voxel-size must be positive")
    for flag, items, example in (("--preprocess-set", args.preprocess_set, "ground_patches.size=2.0"),
                                 ("--pretrain-set", args.pretrain_set, "data.train.mask_ratio=0.5")):
        for item in items:
            key, equals, _ = item.partition("=")
            if not equals or not key:
                parser.error(f"{flag} {item}: KEY=VALUE, e.g. {example}")
    for item in args.pretrain_set:
        key = item.partition("=")[0]
        if key in BENCHMARK_PRETRAIN_KEYS:
            flag = BENCHMARK_PRETRAIN_KEYS[key]
            parser.error(f"--pretrain-set {item}: the benchmark sets {key}" + (f" (use {flag})" if flag else ""))
    return args


def settings_from(args: argparse.Namespace, code: dict) -> Settings:
    from voxseg.data import semantic_kitti as sk
    from voxseg.data.labels import LabelConfig

    rows = [r for row in args.rows for r in PRESETS.get(row, [row])]
    rows = list(dict.fromkeys([SCRATCH] + rows))  # scratch first, each row once
    label_config = Path(args.label_config).resolve()
    num_classes = None if label_config == SYNTHETIC_LABELS.resolve() else LabelConfig.load(label_config).num_classes
    cells = make_cells(rows, args.seeds_by_fraction, args.ablation_fractions,
                       None if args.ablation_seeds is None else sorted(set(args.ablation_seeds)))
    return Settings(data=Path(args.data).resolve(), out=Path(args.out).resolve(),
                    train_sequences=[sk.sequence_name(q) for q in args.train_sequences],
                    val_sequence=sk.sequence_name(args.val_sequence), label_config=label_config, cells=cells,
                    code=code, pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
                    pretrain_set=list(args.pretrain_set), preprocess_set=list(args.preprocess_set),
                    voxel_size=args.voxel_size, device=args.device, num_classes=num_classes)


def summary_settings(s: Settings, parallel: int, val_scans: int) -> dict:
    """The settings as OUT/summary.json and the record hold them."""
    return {"data": str(s.data), "train_sequences": s.train_sequences, "val_sequence": s.val_sequence,
            "val_scans": val_scans, "label_config": str(s.label_config), "cells": cells_json(s.cells),
            "pretrain_steps": s.pretrain_steps, "pretrain_set": s.pretrain_set, "preprocess_set": s.preprocess_set,
            "finetune_steps": s.finetune_steps, "voxel_size": s.voxel_size, "device": s.device, "jobs": parallel,
            "out": str(s.out)}


def summary_document(s: Settings, jobs: list[Job], status: dict[str, str], miou: dict[tuple[str, float, int], float],
                     machine: dict, parallel: int, val_scans: int, elapsed: float,
                     class_iou: dict | None = None) -> dict:
    """OUT/summary.json and the record: the settings, the code, the machine, every run, the table
    and the targets, whether every planned fine-tune is measured, the jobs' status and the
    elapsed time."""
    summary = summarize(miou, s.cells)
    summary.update(
        settings=summary_settings(s, parallel, val_scans), code=s.code, machine=machine,
        runs=run_records(jobs, miou, s.out, machine.get("cpu"), class_iou),
        complete=len(miou) == sum(job.kind == "finetune" for job in jobs),
        status=status, failed=sorted(n for n, st in status.items() if st in ("failed", "skipped")), elapsed_s=elapsed)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_readme:
        record = args.record or RECORD
        studies = render_readme_file(record, args.readme, args.studies)
        print(f"{args.readme}: the label-efficiency table from {record}, the studies table from it and "
              f"{studies} stud{'ies' if studies != 1 else 'y'} in {args.studies}")
        return 0
    s = settings_from(args, code_identity())
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
    machine = machine_info(s.device)
    if args.record is not None and not args.verify:
        for line in carry_recorded(jobs, args.record, s, val_scans, machine.get("cpu")):
            print(line, flush=True)
    if args.verify:
        stale = stale_runs(jobs, s.code)
        made_by_other = [name for name in args.verify if name in stale]
        if made_by_other:
            raise BenchError(f"--verify {made_by_other[0]}: {stale[made_by_other[0]]}; verify at the code that made it")
        return verify(jobs, args.verify, s.out)
    for line in set_aside_stale(jobs, s.code, s.out):
        print(line, flush=True)
    finetunes = [j for j in jobs if j.kind == "finetune"]
    pretrainings = [j for j in jobs if j.kind == "pretrain"]
    todo = [j for j in jobs if not j.finished()]
    seeds = "; ".join(f"{ROWS[row].name}: " + ", ".join(f"{frac_key(f)}% {' '.join(map(str, ss))}"
                                                         for f, ss in by_fraction.items())
                      for row, by_fraction in s.cells.items())
    print(f"plan: {len(pretrainings)} pretraining{'s' if len(pretrainings) != 1 else ''} x {s.pretrain_steps} steps "
          f"({', '.join(j.row for j in pretrainings) or 'none'})"
          + (f" with {' '.join(s.pretrain_set)}" if s.pretrain_set else "")
          + (f" on groups made with {' '.join(s.preprocess_set)}" if s.preprocess_set else "")
          + f", {len(finetunes)} fine-tunes x {s.finetune_steps} steps, batch 1, voxel {s.voxel_size:g} m, "
          f"device {s.device}, {args.jobs} jobs at a time; held-out sequence {s.val_sequence} ({val_scans} scans); "
          f"output {s.out}; {describe_code(s.code)}\n"
          f"  seeds: {seeds}", flush=True)
    if len(todo) < len(jobs):
        print(f"  {len(jobs) - len(todo)} of {len(jobs)} jobs already finished by this code: reused", flush=True)
    if todo:
        low, high = estimate(jobs, args.jobs, s), estimate(jobs, args.jobs, s, slow=True)
        print(f"  estimate on a busy 2-core CPU at 0.2 m voxels: {low / 60:.0f}-{high / 60:.0f} min "
              "(a GPU is faster, smaller voxels slower)", flush=True)

    def document(status: dict[str, str]) -> dict:
        miou, class_iou = read_results(jobs, status, s.finetune_steps)
        return summary_document(s, jobs, status, miou, machine, args.jobs, val_scans, time.perf_counter() - start,
                                class_iou)

    def record_progress(status: dict[str, str]) -> None:
        """After each fine-tune: the record so far (complete false), so that what finished
        stands in the repository however the benchmark ends (carry_recorded continues it)."""
        check_subsets(jobs, status)
        summary = document(status)
        if args.record is not None and record_problem(summary) is None:
            args.record.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(args.record, json.dumps(summary, indent=2) + "\n")

    def on_done(job: Job, status: dict[str, str]) -> None:
        if job.kind == "finetune":
            record_progress(status)

    status = run_jobs(jobs, args.jobs, on_done=on_done)
    elapsed = time.perf_counter() - start
    compared = check_subsets(jobs, status)
    summary = document(status)
    atomic.write_text(s.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    failed = summary["failed"]

    print(f"\nelapsed {elapsed / 60:.1f} min; {sum(st == 'done' for st in status.values())} jobs run, "
          f"{sum(st == 'reused' for st in status.values())} reused"
          + (f", {len(failed)} failed or skipped: {', '.join(failed)}" if failed else "")
          + f"; labelled scans identical across rows for all {compared} (fraction, seed) pairs")
    if args.record is not None:
        problem = record_problem(summary)
        if problem is None:
            args.record.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(args.record, json.dumps(summary, indent=2) + "\n")
            print(f"record: {args.record} "
                  "(the table in docs/results.md: python benchmarks/label_efficiency.py --render-readme)")
        else:
            print(f"record NOT written to {args.record}: {problem}")
    print(f"\nmIoU (%) on sequence {s.val_sequence} ({val_scans} scans), mean of n seeds; (mean difference to "
          f"No Pre-training [paired {100 * CI_LEVEL:g}% interval]); summary: {s.out / 'summary.json'}")
    for line in format_table(summary, s.cells, summary["runs"]):
        print(line)
    for line in verdicts(summary):
        print(line, flush=True)
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
