#!/usr/bin/env python3
"""The summary of `make gpu-check` (tools/gpu_check.sh), from what its steps left in OUT.

    python3 tools/gpu_check_summary.py runs/gpu_check [--budget 540]

Reads OUT/results.tsv (one line a step: name, pass|FAIL|SKIP, seconds, exit status, note),
OUT/info.tsv (key, value: the GPU, torch, the MinkowskiEngine wheel, ...), each step's log in
OUT/logs/NAME.log and the runs' outputs (OUT/finetune/metrics.json, ...). Prints the tail of each
failed step's log, then one table: each step, its result, seconds and key figures. A step whose
command exited 0 but whose output shows it did not do its job (the cuda tests skipped, the NCCL
step trained without a process group, no encoder written) is a failure. Exits 1 when any step
failed or was skipped, else 0. Standard library only: it runs with any Python 3.10+, the venv
installed or not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

TAIL_LINES = 30
#: info.tsv's keys, as the summary names them, in its order
INFO_LABELS = (("gpu", "GPU"), ("torch", "torch"), ("nvcc", "nvcc"), ("venv", "venv"),
               ("me_wheel", "MinkowskiEngine wheel"), ("wheels", "wheels"), ("debs", ".deb files"),
               ("scans", "benchmark scans"))


@dataclass
class Step:
    name: str
    status: str  # pass | FAIL | SKIP
    seconds: float
    rc: str = ""
    note: str = ""
    figures: str = ""


def read_results(path: Path) -> list[Step]:
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        if not line.strip():
            continue
        name, status, seconds, rc, note = (line.split("\t") + [""] * 5)[:5]
        steps.append(Step(name, status, float(seconds or 0), rc, note))
    return steps


def read_info(path: Path) -> dict[str, str]:
    info = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        key, _, value = line.partition("\t")
        if key:
            info[key] = value
    return info


def last_match(pattern: str, text: str) -> re.Match | None:
    matches = list(re.finditer(pattern, text, re.MULTILINE))
    return matches[-1] if matches else None


# --- figures: (figures, a reason to fail or None) per step, from its log --------------------------

def install_figures(log: str, out: Path) -> tuple[str, str | None]:
    if "building MinkowskiEngine" in log:
        wheel = "MinkowskiEngine wheel built"
    elif "pip install MinkowskiEngine from" in log:
        wheel = "MinkowskiEngine wheel from the cache"
    else:
        wheel = "MinkowskiEngine kept"
    done = last_match(r"done: (torch \S+), MinkowskiEngine (\S+) \((CUDA|CPU)\)", log)
    if done is None:
        return wheel, None
    figures = f"{wheel}; {done[1]}, ME {done[2]} ({done[3]})"
    return figures, ("MinkowskiEngine has no CUDA" if done[3] != "CUDA" else None)


def pytest_figures(log: str, out: Path) -> tuple[str, str | None]:
    line = last_match(r"^=*\s*(\d+ (?:passed|failed|skipped|error|errors|deselected)\b.*?)\s*=*$", log)
    if line is None:
        return "", None
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", line[1])}
    figures = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    if counts.get("skipped"):
        return figures, "cuda tests skipped (no CUDA MinkowskiEngine or no GPU seen by the venv?)"
    if not counts.get("passed"):
        return figures, "no cuda test passed"
    return figures, None


def synthetic_figures(log: str, out: Path) -> tuple[str, str | None]:
    done = last_match(r"synthetic dataset in \S+: (\d+ scans in \d+ sequences)", log)
    return (done[1] if done else ""), None


def preprocess_figures(log: str, out: Path) -> tuple[str, str | None]:
    seq = last_match(r"sequence (\d+): complete; .*?(\d+)/\d+ windows, ([\d,]+) points, (\d+) group ids", log)
    if seq is None:
        return "", None
    return f"sequence {seq[1]}: {seq[2]} windows, {seq[4]} group ids", None


def bench_figures(log: str, out: Path) -> tuple[str, str | None]:
    """The last lines of benchmarks/backbone.py: memory ratio, then overhead ratio; with --batch
    the table row gives scans/s (voxseg, bare), without it ms per step."""
    parts = []
    batch_row = last_match(r"^\s*([\d.]+)m\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+"
                           r"([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", log)
    scan_row = last_match(r"^\s*([\d.]+)m\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$",
                          log)
    if batch_row is not None:
        parts.append(f"voxseg {batch_row[3]} scans/s, bare {batch_row[4]}")
    elif scan_row is not None:
        parts.append(f"voxseg {scan_row[3]} ms/step, bare {scan_row[4]}")
    ratio = last_match(r"^voxseg overhead ratio .*?: ([\d.]+) \(target", log)
    memory = last_match(r"^voxseg memory ratio .*?: ([\d.]+) \(target", log)
    if ratio is not None:
        parts.append(f"ratio {ratio[1]}")
    if memory is not None:
        parts.append(f"memory ratio {memory[1]}")
    return ", ".join(parts), None


def metrics_figures(run: Path) -> str:
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return ""
    parts = [f"step {metrics.get('step')}"]
    loss = metrics.get("train_losses", {}).get("loss")
    if loss is not None:
        parts.append(f"loss {loss:.3f}")
    if metrics.get("miou") is not None:
        parts.append(f"mIoU {100 * metrics['miou']:.1f}%")
    return ", ".join(parts)


def finetune_figures(log: str, out: Path) -> tuple[str, str | None]:
    return metrics_figures(out / "finetune"), None


def ddp_figures(log: str, out: Path) -> tuple[str, str | None]:
    group = last_match(r"; (\d+) processes \((\w+)\), global batch (\d+)", log)
    figures = metrics_figures(out / "ddp")
    if group is None:
        return figures, "trained without a process group (no 'N processes (nccl)' line)"
    figures = f"{group[1]} process(es), {group[2]}, global batch {group[3]}" + (f"; {figures}" if figures else "")
    return figures, (None if group[2] == "nccl" else f"process group {group[2]}, not nccl")


def pretrain_figures(log: str, out: Path) -> tuple[str, str | None]:
    encoder = last_match(r"encoder weights for fine-tuning \(--pretrained\): (\S+)", log)
    if encoder is None:
        return "", "no encoder written"
    return "encoder.pt written", None


FIGURES = {
    "install": install_figures,
    "cuda-tests": pytest_figures,
    "synthetic": synthetic_figures,
    "preprocess": preprocess_figures,
    "bench-scan": bench_figures,
    "bench-batch8": bench_figures,
    "finetune": finetune_figures,
    "ddp-nccl": ddp_figures,
    "pretrain": pretrain_figures,
}


def fill(step: Step, out: Path) -> Step:
    """The step's figures; a step that exited 0 without doing its job becomes a failure."""
    log_path = out / "logs" / f"{step.name}.log"
    if step.status == "SKIP" or step.name not in FIGURES or not log_path.is_file():
        return step
    log = log_path.read_text(errors="replace")
    step.figures, problem = FIGURES[step.name](log, out)
    if step.status == "pass" and problem:
        step.status, step.note = "FAIL", problem
    return step


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    if not path.is_file():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def render(steps: list[Step], info: dict[str, str], out: Path, budget: float) -> str:
    rows = []
    for step in steps:
        if step.status == "FAIL":
            rows.append(f"--- {step.name} failed ({step.note or f'exit status {step.rc}'}); "
                        f"the end of {out / 'logs' / (step.name + '.log')}:")
            rows.append(tail(out / "logs" / f"{step.name}.log"))
    rows.append("")
    rows.append(f"gpu-check summary (logs in {out / 'logs'})")
    for key, label in INFO_LABELS:
        if info.get(key):
            rows.append(f"  {label}: {info[key]}")
    width = max([len(s.name) for s in steps] + [5])
    rows.append(f"  {'step':<{width}}  {'result':<6}  {'seconds':>7}  figures")
    for s in steps:
        figures = s.figures
        if s.status != "pass" and s.note:
            figures = f"{figures}; {s.note}" if figures else s.note
        rows.append(f"  {s.name:<{width}}  {s.status:<6}  {s.seconds:>7.0f}  {figures}".rstrip())
    total = float(info.get("total_seconds") or sum(s.seconds for s in steps))
    verdict = "within" if total <= budget else "OVER"
    rows.append(f"  {'total':<{width}}  {'':<6}  {total:>7.0f}  {verdict} the budget of {budget:.0f} s")
    bad = [s.name for s in steps if s.status != "pass"]
    rows.append(f"gpu-check: {len(steps) - len(bad)} of {len(steps)} steps passed"
                + (f"; not passed: {', '.join(bad)}" if bad else ""))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the check's output folder (runs/gpu_check)")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds the whole check should take")
    args = parser.parse_args(argv)
    steps = [fill(s, args.out) for s in read_results(args.out / "results.tsv")]
    if not steps:
        print(f"gpu-check: no step results in {args.out / 'results.tsv'}")
        return 1
    print(render(steps, read_info(args.out / "info.tsv"), args.out, args.budget))
    return 0 if all(s.status == "pass" for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
