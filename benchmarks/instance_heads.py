#!/usr/bin/env python3
"""Instance heads side by side on the synthetic sequences, with identical training budgets.

    python benchmarks/instance_heads.py [--data data/synthetic] [--steps 600] [--rows ROW ...]

Each row fine-tunes its config (configs/finetune/synthetic_minkunet14a_<row>.yaml) from scratch on
sequences 00-03 with the same steps, seed and data, then predicts the held-out sequence 04 scan
by scan and prints one table: AP, AP50, AP25 (ScanNet), PQ (SemanticKITTI), mCov, mWCov, mPrec,
mRec (ASIS), mIoU, and the inference milliseconds per scan split into network and clustering
(like ASIS's Table 5), and "IF pur": how often instance fusion's neighbours share the voxel's
ground-truth class (see fusion_purity). The last line compares the first two rows, ASIS against its vanilla
baseline, as the paper's Tables 1-3 do. `--rows asis_sa asis_if` adds Table 3's ablation (semantic
awareness only, instance fusion only), `--rows probabilistic_printed extdim` the probabilistic-embedding
head and its deterministic baseline, `--rows mpnet mpnet_nomem` MPNet with and without its memory,
`--rows dpgnet` DPGNet's differentiable-grouping head (its "ASA" column: the achievable segmentation
accuracy of its cliques), and `--rows heads` one row per head: the table of every head, outside the
default budget. Runs that finished are reused, and so are their scores (OUT/<row>/benchmark.json,
newer than the checkpoint); delete them to retrain or re-score.
MPNet's Baseline row (mpnet_nomem) trains byte for byte as asis_vanilla (tested), so in a table
with both it is reported from the asis_vanilla run unless it has a finished run of its own.
It also saves the thing-voxel embeddings of the held-out scan with the most of them to
OUT/<row>/embeddings.npy, real input for benchmarks/cluster.py --embeddings.

Every run folder records the code that trained it (code.json: benchmarks.common.code_identity),
and so does its score (benchmark.json). A run or score made by other code is not reused: the run
moves to OUT/stale/ and trains again, one line saying why. `--record` adds the table to
benchmarks/results/instance_heads.json (one table per step count; rows of the same code join the
table, so rows may be run by separate invocations), if every row was made by one committed, clean
code; `--render-readme` rewrites the instance-heads block of docs/results.md from that record.
The issue's open questions are rows of their own: asis_warmup (instance fusion after a warm-up),
mpnet_insmem and mpnet_segmem (MPNet's Table 1), probabilistic_printed (the paper's eq. 17,
against the shipped recipe's cross-entropy term beside it), and `--steps 1800 --out
runs/bench_instance_heads_1800` (is 600 steps too short?).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import voxseg.data.builtin  # noqa: E402,F401
import voxseg.evaluation  # noqa: E402,F401
import voxseg.models  # noqa: E402,F401
from benchmarks.common import (  # noqa: E402
    BenchError,
    code_identity,
    commit_problem,
    describe_code,
    describe_cpus,
    machine_info,
    read_record,
    recorded_code,
    render_page_block,
    replace_block,
    set_aside,
)
from voxseg import atomic, sparse  # noqa: E402
from voxseg.data.collate import collate, to_device  # noqa: E402
from voxseg.engine import checkpoint, finetune  # noqa: E402
from voxseg.engine.device import pick_device  # noqa: E402
from voxseg.errors import VoxsegError  # noqa: E402
from voxseg.evaluation.asa import achievable_segmentation_accuracy  # noqa: E402
from voxseg.registry import DATASETS, EVALUATORS, MODELS  # noqa: E402
from voxseg.synthetic import SyntheticSpec, generate_dataset  # noqa: E402

ROWS = {"asis": "ASIS", "asis_vanilla": "ASIS vanilla", "asis_sa": "ASIS SA only", "asis_if": "ASIS IF only",
        "asis_warmup": "ASIS IF warm-up",
        "probabilistic": "Probabilistic", "probabilistic_printed": "Prob. (eq. 17)", "extdim": "ExtDim",
        "mpnet": "MPNet", "mpnet_nomem": "MPNet no mem",
        "mpnet_insmem": "MPNet InsMem", "mpnet_segmem": "MPNet +SegMem", "mpnet_beta16": "MPNet b=16",
        "mpnet_printed": "MPNet b=1",
        "dpgnet": "DPGNet"}
# the 60-minute budget on 2 cores; asis_sa and asis_if are ASIS's Table 3 ablation, probabilistic and
# extdim the probabilistic-embedding head (Zhang & Wonka; the shipped recipe, with a cross-entropy
# term; probabilistic_printed: the paper's eq. 17) and its deterministic ExtDim baseline,
# mpnet and mpnet_nomem MPNet (He et al.) with and without its memory (mpnet_insmem, mpnet_segmem:
# the other rows of its Table 1; mpnet_printed: eq. 2 as printed, beta 1 fixed; mpnet_beta16: beta 16
# fixed; the others learn beta), dpgnet the
# differentiable-grouping head of DPGNet (Cheng et al.)
DEFAULT_ROWS = ["asis", "asis_vanilla"]
# rows that train byte for byte as another row (tested): reported from that row's run when it is in
# the same table and the row has no finished run of its own. MPNet's Baseline (both memories off)
# is vanilla ASIS: tests/test_mpnet.py::test_the_baseline_row_trains_exactly_as_vanilla_asis
SAME_AS = {"mpnet_nomem": "asis_vanilla"}
# `--rows heads`: one row per head, the table of every head under the same budget
PRESETS = {"heads": ["asis", "asis_vanilla", "probabilistic", "extdim", "mpnet", "mpnet_printed", "mpnet_nomem",
                   "dpgnet"]}
COLUMNS = ("ap", "ap50", "ap25", "pq", "mcov", "mwcov", "mprec", "mrec", "miou")
LABELS = {"ap": "AP", "ap50": "AP50", "ap25": "AP25", "pq": "PQ", "mcov": "mCov", "mwcov": "mWCov", "mprec": "mPrec",
          "mrec": "mRec", "miou": "mIoU"}  # the papers' spelling of COLUMNS
SCORES = (*COLUMNS, "network_ms", "cluster_ms", "fusion_purity", "asa")  # what evaluate() measures
# the questions the rows answer, printed and recorded as differences (row, against, the question)
COMPARISONS = [
    ("asis", "asis_vanilla", "ASIS (SA + IF) against vanilla, its Table 3"),
    ("asis_warmup", "asis", "instance fusion after a warm-up against fusion from the start"),
    ("asis_warmup", "asis_vanilla", "ASIS with the fusion warm-up against vanilla"),
    ("mpnet_insmem", "mpnet_nomem", "MPNet's InsMem row against its Baseline (Table 1)"),
    ("mpnet_segmem", "mpnet_nomem", "MPNet's InsMem + SegMem row against its Baseline (Table 1)"),
    ("mpnet", "mpnet_nomem", "MPNet (both memories, beta learned) against its Baseline"),
    ("probabilistic", "probabilistic_printed", "the shipped cross-entropy term beside the probabilistic head, "
                                               "against the paper's eq. 17"),
    ("probabilistic_printed", "extdim", "the probabilistic embedding against ExtDim, its Table 4"),
]
RECORD = ROOT / "benchmarks" / "results" / "instance_heads.json"
RESULTS_PAGE = ROOT / "docs" / "results.md"
TABLE_BEGIN, TABLE_END = "<!-- instance-heads:begin -->", "<!-- instance-heads:end -->"


def train(row: str, data: Path, out: Path, steps: int, device: str, code: dict) -> Path:
    """Fine-tune one row's config, resume it, or reuse its finished run, if `code` made it; a run
    made by other code is set aside (benchmarks.common.set_aside) and trains again. Returns its
    output folder."""
    run_dir = out / row
    config = ROOT / "configs" / "finetune" / f"synthetic_minkunet14a_{row}.yaml"
    overrides = [f"output_dir={run_dir}", f"data.root={data}", f"train.max_steps={steps}", "train.val_every=0",
                 f"train.device={device}", "train.progress=false"]
    metrics, last = run_dir / "metrics.json", run_dir / "checkpoints" / "last.pt"
    if metrics.exists() or last.exists():
        made_by = recorded_code(run_dir)
        if made_by is None or made_by["code_hash"] != code["code_hash"]:
            why = "its code is not recorded" if made_by is None else f"made by {describe_code(made_by)}"
            print(f"rerun {row}: {why}, this is {describe_code(code)} (the old run is in {set_aside(run_dir, out)})",
                  flush=True)
    if metrics.exists():
        ran = json.loads(metrics.read_text()).get("step")
        if ran != steps:
            raise BenchError(f"{run_dir}: a finished run of {ran} steps, the benchmark asks {steps}; "
                             "choose another --out or delete the folder to rerun it")
        print(f"{row}: reusing {run_dir}", flush=True)
        return run_dir
    resume = last.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(run_dir / "code.json", json.dumps(code, indent=2) + "\n")
    start = time.perf_counter()
    finetune.run(finetune.resolve(str(config), overrides), resume=resume)
    print(f"{row}: trained {steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    return run_dir


def scored(run_dir: Path, code: dict) -> dict | None:
    """The run's saved score (benchmark.json), if `code` made it after the run's last checkpoint."""
    path = run_dir / "benchmark.json"
    try:
        score = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    newer = path.stat().st_mtime >= (run_dir / "checkpoints" / "last.pt").stat().st_mtime
    return score if newer and score.get("code_hash") == code["code_hash"] else None


@torch.no_grad()
def evaluate(run_dir: Path, data: Path, device: torch.device) -> dict:
    """Metrics on the validation sequence, milliseconds per scan (network, clustering), and the
    embeddings of the scan with the most thing voxels."""
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    cfg = state["config"]
    if cfg["train"]["threads"]:
        sparse.set_threads(cfg["train"]["threads"])
    model = MODELS.build(cfg["model"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    dataset = DATASETS.build(cfg["data"]["val"], root=str(data), label_config=cfg["data"]["label_config"])
    evaluator = EVALUATORS.build(cfg["evaluator"], labels=dataset.label_config)
    clustering = [h for h in model.heads.values() if hasattr(h, "timings")]
    things = clustering[0].thing_classes
    total = cluster = 0.0
    asa_correct = asa_labelled = 0.0  # ASA of a DPGNet head's cliques, from the same predictions
    best = np.zeros((0, 0), dtype=np.float32)
    for i in range(len(dataset)):
        sample = dataset[i]
        batch = to_device(collate([sample]), device)
        before = sum(h.timings["cluster_s"] for h in clustering)
        start = time.perf_counter()
        out = model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        total += time.perf_counter() - start
        cluster += sum(h.timings["cluster_s"] for h in clustering) - before
        pred = {k: v.cpu().numpy() for k, v in out["pred"].items()}
        evaluator.add(pred, sample)
        if "clique" in pred:  # each scan's ASA weighted by its labelled points (unlabelled count nowhere)
            valid = sample["segment"] >= 0
            asa_correct += achievable_segmentation_accuracy(pred["clique"], sample["instance"], valid) * valid.sum()
            asa_labelled += valid.sum()
        for head in out["heads"].values():
            if "voxel_embedding" in head:
                voxel_class = head["voxel_logits"].argmax(dim=1).cpu().numpy()
                embedding = head["voxel_embedding"][torch.from_numpy(np.isin(voxel_class, things)).to(device)]
                if len(embedding) > len(best):
                    best = embedding.cpu().numpy()
    result = evaluator.result()
    result["fusion_purity"] = fusion_purity(model, dataset, device)
    # the achievable segmentation accuracy of a DPGNet head's cliques against the ground-truth
    # instances (voxseg.evaluation.asa) over the labelled points; NaN for heads without cliques
    result["asa"] = asa_correct / asa_labelled if asa_labelled else float("nan")
    scans = len(dataset)
    result["network_ms"] = 1000 * (total - cluster) / scans
    result["cluster_ms"] = 1000 * cluster / scans
    np.save(run_dir / "embeddings.npy", best)
    return result


@torch.no_grad()
def fusion_purity(model, dataset, device: torch.device) -> float:
    """How often instance fusion (ASIS eq. 6) fuses a voxel with voxels of its own class: over
    the labelled voxels of every scan, the mean fraction of its K fusion neighbours (nearest in
    embedding space, those farther than delta_v replaced by itself) whose ground-truth class
    (the majority of its points) is its own. Computed for rows without fusion too, from their
    embeddings: what fusion would read. Features fused from other classes are what can cost IF
    its semantic accuracy."""
    name = next((n for n, h in model.heads.items() if hasattr(h, "fusion_neighbours")), None)
    if name is None:  # a head without instance fusion's kNN (not ASIS)
        return float("nan")
    head = model.heads[name]
    captured = {}
    handle = model.backbone.register_forward_hook(lambda module, args, output: captured.update(features=output))
    same = total = 0.0
    try:
        for i in range(len(dataset)):
            batch = to_device(collate([dataset[i]]), device)
            out = model(batch)
            features = captured["features"]
            neighbours = head.fusion_neighbours(out["heads"][name]["voxel_embedding"], features.voxel_batch)
            labelled = batch["segment"] >= 0
            votes = torch.zeros(len(neighbours), head.num_classes, device=device)
            votes.index_put_((features.inverse[labelled], batch["segment"][labelled]),
                             torch.ones(int(labelled.sum()), device=device), accumulate=True)
            has = votes.sum(dim=1) > 0
            voxel_class = torch.where(has, votes.argmax(dim=1), -1)
            rows = neighbours[has]
            same += float((voxel_class[rows] == voxel_class[has].unsqueeze(1)).float().sum())
            total += rows.numel()
    finally:
        handle.remove()
    return same / max(total, 1.0)


# --------------------------------------------------------------------- the record, the results page
def finite(value):
    """A score for JSON: NaN (a metric a head does not have) as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def table_document(steps: int, results: dict[str, dict], same_as: dict[str, str], code: dict, machine: dict,
                   elapsed: float) -> dict:
    """One table of the record: the settings, the code and machine, and per row its scores, its
    config, the code hash its run records and the CPU (and OpenBLAS kernels) of the invocation
    that scored it, None for a score saved before they were recorded (a row reported from its
    twin's run names it)."""
    rows = {}
    for row, result in results.items():
        rows[row] = {"name": ROWS[row], "config": f"configs/finetune/synthetic_minkunet14a_{row}.yaml",
                     "same_as": same_as.get(row), "code_hash": result["code_hash"], "cpu": result.get("cpu"),
                     **{key: finite(result.get(key, float("nan"))) for key in SCORES}}
    return {"steps": steps, "val_sequence": "04", "code": code, "machine": machine, "elapsed_s": elapsed, "rows": rows}


def record_problem(table: dict) -> str | None:
    """Why a table may not join the record, or None: every row made by one committed, clean code
    (a recorded row reproduces when rerun at its commit)."""
    problem = commit_problem(table["code"])
    if problem is not None:
        return problem
    other = sorted(row for row, r in table["rows"].items() if r["code_hash"] != table["code"]["code_hash"])
    if other:
        return f"rows made by other code: {', '.join(other)}"
    return None


def merge_table(record: dict, table: dict) -> dict:
    """The record with `table` in it. A table of the same steps made by the same code keeps its
    other rows (rows may be run by separate invocations) and takes this one's; one made by other
    code is replaced whole. Tables in ascending steps."""
    tables = {t["steps"]: t for t in record.get("tables", [])}
    old = tables.get(table["steps"])
    if old is not None and old["code"]["code_hash"] == table["code"]["code_hash"]:
        table = {**table, "rows": {**old["rows"], **table["rows"]},
                 "elapsed_s": old["elapsed_s"] + table["elapsed_s"]}
    tables[table["steps"]] = table
    return {"tables": [tables[k] for k in sorted(tables)]}


def load_record(path: Path) -> dict:
    record = read_record(path, "python benchmarks/instance_heads.py --record")
    if not isinstance(record.get("tables"), list):
        raise BenchError(f"{path}: not an instance-heads record (no 'tables' list)")
    return record


def percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def comparison_lines(rows: dict[str, dict]) -> list[str]:
    """The COMPARISONS whose two rows are in `rows` (each with its "name"): the differences in AP,
    AP50, PQ, mWCov and mIoU."""
    lines = []
    for row, base, question in COMPARISONS:
        if row in rows and base in rows:
            a, b = rows[row], rows[base]
            diffs = ", ".join(f"{LABELS[key]} {100 * (a[key] - b[key]):+.1f}"
                              for key in ("ap", "ap50", "pq", "mwcov", "miou"))
            lines.append(f"{a['name']} - {b['name']}: {diffs} ({question})")
    return lines


def render_markdown(record: dict, source: str = "benchmarks/results/instance_heads.json") -> list[str]:
    """The results page's block from a record: per table its rows' scores (%; ms per scan), the
    comparisons the issue asks, and where and with which code it was measured: the machine of
    the latest invocation, and each row's CPU where the rows' differ from it (cpu_lines)."""
    lines = [f"<!-- generated by `python benchmarks/instance_heads.py --render-readme` from {source}: do not edit -->"]
    header = ("| method | config | " + " | ".join(LABELS[c] for c in COLUMNS)
              + " | IF pur | ASA | net ms | clust ms |")
    for table in record["tables"]:
        code, machine = table["code"], table["machine"]
        lines += ["", f"{table['steps']} steps per row, held-out sequence {table['val_sequence']}:", "", header,
                  "|---|---|" + "---|" * (len(COLUMNS) + 4)]
        for r in table["rows"].values():
            config = f"`{Path(r['config']).name}`" + (f" (the run of {r['same_as']})" if r["same_as"] else "")
            lines.append(f"| {r['name']} | {config} | " + " | ".join(percent(r[c]) for c in COLUMNS)
                         + f" | {percent(r['fusion_purity'])} | {percent(r['asa'])} | {r['network_ms']:.0f} | "
                         f"{r['cluster_ms']:.0f} |")
        compared = comparison_lines(table["rows"])
        if compared:
            lines += [""] + [f"- {line}" for line in compared]
        gpu = f" ({machine['gpu']})" if machine.get("gpu") else ""
        lines += ["", f"Measured at commit `{code['commit'][:7]}` (code hash `{code['code_hash'][:12]}`): "
                      f"{machine['platform']}, {describe_cpus(machine)}, Python {machine['python']}, torch "
                      f"{machine['torch']}, MinkowskiEngine {machine['minkowskiengine']}, device "
                      f"{machine['device']}{gpu}; {table['elapsed_s'] / 60:.0f} min of invocations in all."]
        lines += cpu_lines(table)
    return lines


def cpu_lines(table: dict) -> list[str]:
    """Nothing when every row was scored on the table's machine's CPU; else one line naming the
    rows of each CPU (kernels take other code paths on other CPUs, so such rows differ by more
    than their method), rows scored before the CPU was recorded as 'not recorded'."""
    by_cpu: dict[str, list[str]] = {}
    for r in table["rows"].values():
        by_cpu.setdefault(r.get("cpu") or "not recorded", []).append(r["name"])
    if list(by_cpu) == [table["machine"].get("cpu") or "not recorded"]:
        return []
    return ["", "Rows by the CPU of the invocation that scored them: "
            + "; ".join(f"{cpu}: {', '.join(names)}" for cpu, names in by_cpu.items()) + "."]


def render_readme(readme: str, block: list[str], path: Path) -> str:
    """`readme` (the results page's text) with its instance-heads block replaced by `block`."""
    return replace_block(readme, block, path, TABLE_BEGIN, TABLE_END)


def render_readme_file(record_path: Path, readme_path: Path) -> None:
    """Rewrite the results page's instance-heads block from the record (a bad record leaves it)."""
    render_page_block(record_path, readme_path, load_record, render_markdown, TABLE_BEGIN, TABLE_END,
                      "an instance-heads")


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic", help="synthetic dataset root (generated when missing)")
    parser.add_argument("--out", default="runs/bench_instance_heads")
    parser.add_argument("--steps", type=int, default=600, help="training steps per row (identical for all)")
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS) + list(PRESETS),
                        help="rows: asis, asis_vanilla (default); asis_sa, asis_if (ablation), asis_warmup; "
                             "probabilistic, probabilistic_printed, extdim; mpnet, mpnet_nomem (mpnet_insmem, "
                             "mpnet_segmem, mpnet_printed, mpnet_beta16); dpgnet; 'heads' = one row per head")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--record", type=Path, nargs="?", const=RECORD,
                        help=f"add this table to the record (default {RECORD.relative_to(ROOT)}) if committed, "
                             "clean code made every row")
    parser.add_argument("--render-readme", action="store_true",
                        help="rewrite the instance-heads block of docs/results.md from the record and exit")
    parser.add_argument("--readme", type=Path, default=RESULTS_PAGE, help="the page --render-readme rewrites")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_readme:
        record = args.record or RECORD
        render_readme_file(record, args.readme)
        print(f"{args.readme}: the instance-heads block from {record}")
        return 0
    data, out = Path(args.data), Path(args.out)
    rows = list(dict.fromkeys(r for row in args.rows for r in PRESETS.get(row, [row])))
    code = code_identity()
    start = time.perf_counter()
    generate_dataset(data, SyntheticSpec())
    device = pick_device(args.device, option="--device")
    machine = machine_info(args.device)
    results: dict[str, dict] = {}
    same_as: dict[str, str] = {}
    for row in rows:
        twin = SAME_AS.get(row)
        if twin in results and not (out / row / "metrics.json").exists():
            print(f"{row}: trains byte for byte as {twin}; reporting {twin}'s run", flush=True)
            results[row], same_as[row] = results[twin], twin
            continue
        run_dir = train(row, data, out, args.steps, args.device, code)
        score = scored(run_dir, code)
        if score is not None:
            print(f"{row}: reusing {run_dir / 'benchmark.json'}", flush=True)
            results[row] = score
            continue
        results[row] = {**evaluate(run_dir, data, device), "code_hash": code["code_hash"], "cpu": machine.get("cpu")}
        atomic.write_text(run_dir / "benchmark.json", json.dumps(results[row], indent=2, default=float) + "\n")
    elapsed = time.perf_counter() - start

    print(f"\n{len(rows)} rows, {args.steps} steps each, held-out sequence 04, device {device}, "
          f"{elapsed:.0f} s in all; {describe_code(code)}")
    header = (f"{'method':<16}" + "".join(f"{c.upper():>7}" for c in COLUMNS) + f"{'net ms':>9}{'clust ms':>10}"
              + f"{'IF pur':>8}{'ASA':>7}")
    print(header)
    print("-" * len(header))
    for row, r in results.items():
        print(f"{ROWS[row]:<16}" + "".join(f"{100 * r[c]:>7.1f}" for c in COLUMNS)
              + f"{r['network_ms']:>9.0f}{r['cluster_ms']:>10.0f}{100 * r.get('fusion_purity', float('nan')):>8.1f}"
              + f"{100 * r.get('asa', float('nan')):>7.1f}")
    for line in comparison_lines({row: {**r, "name": ROWS[row]} for row, r in results.items()}):
        print(line)
    if args.record is not None:
        table = table_document(args.steps, results, same_as, code, machine, elapsed)
        problem = record_problem(table)
        if problem is None:
            record = load_record(args.record) if args.record.exists() else {}
            args.record.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(args.record, json.dumps(merge_table(record, table), indent=2) + "\n")
            print(f"record: {args.record} (docs/results.md: python benchmarks/instance_heads.py --render-readme)")
        else:
            print(f"record NOT written to {args.record}: {problem}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VoxsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
