"""benchmarks/label_efficiency.py without training: the table, the paired confidence intervals and
the target verdict on hand-made mIoUs, the job plan (what waits for the encoder, identical settings
for scratch and pretrained, seeds per fraction, the recorded protocol), the runner with a fake
subprocess (order, parallelism, reuse, resume, failures), the code identity of run folders (which
runs are reused, which rerun), the check that the rows of a (fraction, seed) trained on the same
scans, and the record and the results-page table generated from it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import label_efficiency as le
from benchmarks.common import code_hash, code_identity, cpu_identity, describe_cpus, machine_info
from tests.helpers import ROOT

CODE = {"code_hash": "c0de" * 16, "commit": "439dd03d6d33409029a6b5038ea52aeb79bcb4c5", "dirty": False}
T_975_2, T_975_4 = 4.302652729749464, 2.7764451051977987  # t quantiles, 2 and 4 degrees of freedom (tables)


def settings(tmp_path: Path, rows=("scratch", "iscc"), fractions=(1.0, 2.0, 5.0, 10.0), seeds=(0, 1), **kw):
    base = dict(data=tmp_path / "data", out=tmp_path / "out", train_sequences=["00", "01"], val_sequence="02",
                label_config=le.SYNTHETIC_LABELS, cells=le.make_cells(list(rows), {f: list(seeds) for f in fractions}),
                code=CODE, pretrain_steps=7, finetune_steps=5, device="cpu")
    base.update(kw)
    return le.Settings(**base)


def groups_done(data: Path, sequences) -> None:
    for seq in sequences:
        manifest = data / "sequences" / seq / "groups" / "manifest.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"status": "complete"}))


def cells(by_row: dict) -> dict:
    return {row: {float(f): seeds for f, seeds in by_fraction.items()} for row, by_fraction in by_row.items()}


# --------------------------------------------------------------------- intervals, table and verdict
def test_paired_interval_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, half-width t_{0.975,2} * 1 / sqrt(3) = 2.4841
    mean, ci = le.paired_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert ci == pytest.approx([2 - T_975_2 / 3 ** 0.5, 2 + T_975_2 / 3 ** 0.5], abs=1e-12)
    assert ci == pytest.approx([-0.4841377, 4.4841377], abs=1e-7)
    assert le.paired_interval([4.0, 4.0]) == (4.0, [4.0, 4.0])  # no spread, no width
    assert le.paired_interval([2.5]) == (2.5, None)  # one seed: undefined


def hand_made():
    # exactly representable values (multiples of 1/16), so the comparisons below are exact
    return {("scratch", 1.0, 0): 0.25, ("scratch", 1.0, 1): 0.5, ("iscc", 1.0, 0): 0.3125, ("iscc", 1.0, 1): 0.5,
            ("scratch", 2.0, 0): 0.5, ("scratch", 2.0, 1): 0.5, ("iscc", 2.0, 0): 0.625}  # iscc 2%: seed 1 missing


def test_summary_means_paired_intervals_and_missing_seeds():
    summary = le.summarize(hand_made(), cells({"scratch": {1: [0, 1], 2: [0, 1]}, "iscc": {1: [0, 1], 2: [0, 1]}}))
    scratch, iscc = summary["table"]["scratch"]["1"], summary["table"]["iscc"]["1"]
    assert scratch["mean"] == 37.5 and scratch["delta"] is None and scratch["ci"] is None and scratch["n"] == 2
    assert iscc["mean"] == 40.625 and iscc["seed_deltas"] == {"0": 6.25, "1": 0.0} and iscc["delta"] == 3.125
    # sd of (6.25, 0) is 6.25 / sqrt(2); half-width t_{0.975,1} * sd / sqrt(2) = 12.7062 * 3.125
    assert iscc["ci"] == pytest.approx([3.125 - 12.706204736174698 * 3.125, 3.125 + 12.706204736174698 * 3.125])
    # a cell missing a seed has no mean, delta or interval (never a mean over fewer seeds)
    missing = summary["table"]["iscc"]["2"]
    assert (missing["mean"], missing["delta"], missing["ci"], missing["seeds"]) == (None, None, None, {"0": 62.5})
    assert le.format_cell(iscc, "iscc") == "40.6 (+3.1 [-36.6, +42.8], n=2)"
    assert le.format_cell(scratch, "scratch") == "37.5 (n=2)"
    assert le.format_cell(missing, "iscc") == "-" and le.format_cell(None, "iscc") == ""
    lines = le.format_table(summary, cells({"scratch": {1: [0, 1], 2: [0, 1]}, "iscc": {1: [0, 1], 2: [0, 1]}}))
    assert lines[0].split() == ["method", "1%", "2%"]
    assert lines[2].split() == ["No", "Pre-training", "37.5", "(n=2)", "50.0", "(n=2)"]
    assert lines[3].split() == ["Ours", "(ISCC)", "40.6", "(+3.1", "[-36.6,", "+42.8],", "n=2)", "-"]
    # every seed is printed, with its difference to scratch
    assert [row.split()[3:] for row in lines if row.split()[:3] == ["Ours", "(ISCC)", "1"]] == [["50.0", "(+0.0)", "-"]]


def five_seeds(deltas: list[float]) -> dict:
    """scratch 25% at 1%, seeds 0-4; ISCC 25% + delta (percent, multiples of 6.25: exact)."""
    miou = {("scratch", 1.0, seed): 0.25 for seed in range(5)}
    miou.update({("iscc", 1.0, seed): 0.25 + d / 100 for seed, d in enumerate(deltas)})
    return le.summarize(miou, cells({"scratch": {1: [0, 1, 2, 3, 4]}, "iscc": {1: [0, 1, 2, 3, 4]}}))["target"]


def test_target_met_at_the_threshold_with_the_interval_above_zero():
    # differences 6.25 x4, 0: mean 5.0; sd^2 = (4 * 1.25^2 + 5^2) / 4 = 7.8125, sd / sqrt(5) = 1.25
    target = five_seeds([6.25, 6.25, 6.25, 6.25, 0.0])
    assert (target["seeds"], target["mean_delta"], target["met"]) == (5, 5.0, True)
    assert target["ci"] == pytest.approx([5 - 1.25 * T_975_4, 5 + 1.25 * T_975_4], abs=1e-12)
    assert le.verdict(target) == ("At 1% labels, ISCC - scratch = +5.00 mIoU (mean of 5 seeds, 95% CI [+1.53, "
                                  "+8.47]): target (>= +5.0 mean over >= 5 seeds, 95% CI above 0) met")


def test_target_not_met_names_every_reason():
    # mean 5.0 over 5 seeds, but spread: sd^2 = 109.375 / 4, interval [-1.49, +11.49]
    target = five_seeds([6.25, 6.25, 0.0, 12.5, 0.0])
    assert target["mean_delta"] == 5.0 and target["met"] is False
    assert target["ci"][0] == pytest.approx(5 - T_975_4 * (109.375 / 4 / 5) ** 0.5, abs=1e-12)
    assert le.verdict(target).endswith("[-1.49, +11.49]): target (>= +5.0 mean over >= 5 seeds, 95% CI above 0) "
                                       "NOT met: CI not above 0")
    # 2 seeds, mean +3.125: every reason
    target = le.summarize(hand_made(), cells({"scratch": {1: [0, 1]}, "iscc": {1: [0, 1]}}))["target"]
    assert le.verdict(target) == ("At 1% labels, ISCC - scratch = +3.12 mIoU (mean of 2 seeds, 95% CI [-36.58, "
                                  "+42.83]): target (>= +5.0 mean over >= 5 seeds, 95% CI above 0) NOT met: mean "
                                  "below +5.0, 2 seeds, fewer than 5, CI not above 0")
    # one seed: no interval
    target = le.summarize(hand_made(), cells({"scratch": {1: [0]}, "iscc": {1: [0]}}))["target"]
    assert le.verdict(target).endswith("(mean of 1 seed, 95% CI n/a): target (>= +5.0 mean over >= 5 seeds, 95% CI "
                                       "above 0) NOT met: 1 seed, fewer than 5, no interval from one seed")
    # a missing seed at the target fraction: not checked rather than judged on fewer seeds
    miou = hand_made()
    del miou[("iscc", 1.0, 1)]
    target = le.summarize(miou, cells({"scratch": {1: [0, 1]}, "iscc": {1: [0, 1]}}))["target"]
    assert target["met"] is None
    assert le.verdict(target) == ("At 1% labels, ISCC - scratch not measured (needs rows scratch and iscc, every "
                                  "seed finished): target (>= +5.0 mean over >= 5 seeds, 95% CI above 0) not checked")


def three_fractions(deltas: dict[float, list[float]], ablations: dict[str, list[float]] | None = None) -> dict:
    """scratch 25% at each fraction of `deltas`, seeds 0 and 1; ISCC 25% + its deltas per fraction
    (percent, multiples of 6.25: exact); each ablation row at 1% 25% + its deltas; a None delta:
    not run yet."""
    ablations = ablations or {}
    miou = {("scratch", f, seed): 0.25 for f in deltas for seed in (0, 1)}
    for row, by_fraction in [("iscc", deltas), *((row, {1.0: d}) for row, d in ablations.items())]:
        miou.update({(row, f, seed): 0.25 + d / 100 for f, ds in by_fraction.items()
                     for seed, d in enumerate(ds) if d is not None})
    plan = {"scratch": {f: [0, 1] for f in deltas}, "iscc": {f: [0, 1] for f in deltas},
            **{row: {1: [0, 1]} for row in ablations}}
    return le.summarize(miou, cells(plan))


def test_ahead_at_every_fraction_met_not_met_and_not_checked():
    summary = three_fractions({1.0: [6.25, 12.5], 2.0: [6.25, 0.0], 10.0: [0.0, 6.25]})
    assert summary["ahead"] == {"deltas": {"1": 9.375, "2": 3.125, "10": 3.125}, "met": True}
    assert le.ahead_verdict(summary["ahead"]) == ("ISCC - scratch at every fraction run: 1% +9.4, 2% +3.1, 10% +3.1: "
                                                  "target (ahead at every fraction) met")
    # level is not ahead: a mean of exactly 0 at 10% fails, as does a loss at 2%
    summary = three_fractions({1.0: [6.25, 12.5], 2.0: [-6.25, 0.0], 10.0: [6.25, -6.25]})
    assert summary["ahead"]["met"] is False
    assert le.ahead_verdict(summary["ahead"]).endswith("1% +9.4, 2% -3.1, 10% +0.0: target (ahead at every "
                                                       "fraction) NOT met: not ahead at 2%, 10%")
    # a fraction with a seed missing is not judged on fewer seeds
    summary = three_fractions({1.0: [6.25, 12.5], 2.0: [6.25, None], 10.0: [-6.25, -6.25]})
    assert summary["ahead"] == {"deltas": {"1": 9.375, "2": None, "10": -6.25}, "met": None}
    assert le.ahead_verdict(summary["ahead"]).endswith("2% -, 10% -6.2: target (ahead at every fraction) not "
                                                       "checked: 2% not measured")
    no_iscc = le.summarize({("scratch", 1.0, 0): 0.25}, cells({"scratch": {1: [0]}}))
    assert le.ahead_verdict(no_iscc["ahead"]) == ("ISCC - scratch at every fraction run: no ISCC row: target (ahead at "
                                                  "every fraction) not checked")


def test_full_method_against_every_ablation_row_paired_by_seed():
    # ISCC +12.5 / +6.25 over scratch at 1%; local-only +6.25 / +6.25 (ISCC - local: 6.25, 0: mean 3.125,
    # sd 6.25 / sqrt(2), half-width t_{0.975,1} * 3.125); occ-only(2) +12.5 / +6.25 (ISCC - occ2: 0, 0)
    summary = three_fractions({1.0: [12.5, 6.25]}, {"local": [6.25, 6.25], "occ2": [12.5, 6.25]})
    local, occ2 = summary["ablations"]["rows"]["local"], summary["ablations"]["rows"]["occ2"]
    assert (local["n"], local["delta"], occ2["delta"], occ2["ci"]) == (2, 3.125, 0.0, [0.0, 0.0])
    assert local["ci"] == pytest.approx([3.125 - 12.706204736174698 * 3.125, 3.125 + 12.706204736174698 * 3.125])
    assert summary["ablations"]["met"] is True and summary["ablations"]["fraction"] == 1.0
    assert le.ablation_verdict(summary["ablations"]) == (
        "Ours (ISCC) - each ablation row at 1% (paired over the row's seeds): local-only +3.1 [-36.6, +42.8] (n=2), "
        "occ-only(2) +0.0 [+0.0, +0.0] (n=2): target (the full method at least matches every ablation row) met")
    # a row ahead of the full method on average fails it, named
    summary = three_fractions({1.0: [12.5, 6.25]}, {"local": [18.75, 6.25], "global": [0.0, 0.0]})
    assert summary["ablations"]["rows"]["local"]["delta"] == -3.125 and summary["ablations"]["met"] is False
    assert le.ablation_verdict(summary["ablations"]).endswith("NOT met: below local-only")
    # a row with a seed missing: not checked, and named
    summary = three_fractions({1.0: [12.5, 6.25]}, {"local": [0.0, None], "global": [0.0, 0.0]})
    assert summary["ablations"]["rows"]["local"] == {"n": 2, "delta": None, "ci": None}
    assert summary["ablations"]["met"] is None
    assert le.ablation_verdict(summary["ablations"]).endswith(
        "local-only -, global-only +9.4 [-30.3, +49.1] (n=2): target (the full method at least matches every "
        "ablation row) not checked: local-only not measured")
    # no ablation row planned: nothing to check
    summary = three_fractions({1.0: [12.5, 6.25]})
    assert summary["ablations"] == {"fraction": 1.0, "rows": {}, "met": None}
    assert le.ablation_verdict(summary["ablations"]) == (
        "Ours (ISCC) - each ablation row at 1% (paired over the row's seeds): no ablation row: target (the full "
        "method at least matches every ablation row) not checked")


# ------------------------------------------------------------------------------------------ the plan
def test_plan_scratch_independent_pretrained_after_encoder_identical_settings(tmp_path):
    s = settings(tmp_path)
    jobs = le.plan(s)
    kinds = [j.kind for j in jobs]
    assert kinds == ["preprocess", "pretrain"] + ["finetune"] * 16
    by_name = {j.name: j for j in jobs}
    assert by_name["pretrain_iscc"].after == ["preprocess"]
    scratch = [j for j in jobs if j.row == "scratch"]
    iscc = [j for j in jobs if j.row == "iscc" and j.kind == "finetune"]
    assert len(scratch) == len(iscc) == 8
    assert all(j.after == [] for j in scratch) and all(j.after == ["pretrain_iscc"] for j in iscc)
    assert all(j.code is CODE for j in jobs)
    # scratch after the pretraining, then its row, each smallest fraction first: the runner starts
    # the ready jobs in this order, so scratch runs fill the free core while the encoder trains
    order = [(j.fraction, j.seed, j.row) for j in jobs if j.kind == "finetune"]
    assert order == [(f, seed, row) for row in ("scratch", "iscc") for f in s.fractions for seed in (0, 1)]
    encoder = str(s.out / "pretrain_iscc" / "checkpoints" / "encoder.pt")
    for a in scratch:
        b = by_name[f"iscc/{a.run_dir.name}"]
        assert (a.fraction, a.seed) == (b.fraction, b.seed)
        strip = lambda argv: [x for x in argv if not x.startswith("output_dir=")]  # noqa: E731
        assert strip(a.overrides) == strip(b.overrides)  # same steps, fraction, seed, data, batch
        assert strip(b.argv) == strip(a.argv)[:4] + ["--pretrained", encoder] + strip(a.argv)[4:]
        assert f"train.label_fraction={a.fraction / 100!r}" in a.overrides and f"train.seed={a.seed}" in a.overrides
        for item in ("train.val_every=0", "train.val_max_scans=0", "train.batch_size=1", "train.threads=1",
                     "train.progress=false", "train.max_steps=5"):
            assert item in a.overrides
    assert len({j.run_dir for j in jobs if j.kind == "finetune"}) == 16  # one folder per run
    assert "train.max_steps=7" in by_name["pretrain_iscc"].argv and "train.threads=1" in by_name["pretrain_iscc"].argv


def test_pretrain_set_changes_every_pretraining_after_its_row_and_nothing_else(tmp_path):
    change = ["data.train.mask_ratio=0.5", "model.use_local=true"]
    plain = le.plan(settings(tmp_path, rows=["scratch", "iscc", "local"], fractions=[1.0], seeds=[0]))
    studied = le.plan(settings(tmp_path, rows=["scratch", "iscc", "local"], fractions=[1.0], seeds=[0],
                               pretrain_set=change))
    for before, after in zip(plain, studied, strict=True):
        if after.kind != "pretrain":
            assert after.argv == before.argv  # fine-tuning identical in every study
            continue
        row_overrides = le.ROWS[after.row].overrides
        at = after.overrides.index(change[0])
        assert after.overrides[at - len(row_overrides):at] == row_overrides  # the study's change comes after the row's
        assert [x for x in after.overrides if x not in change] == before.overrides
        assert after.argv[-len(after.overrides):] == after.overrides


def test_preprocess_set_makes_groups_of_its_own_and_every_pretraining_reads_them(tmp_path):
    change = ["ground_patches.size=2.0"]
    plain = le.plan(settings(tmp_path, rows=["scratch", "iscc", "local"], fractions=[1.0], seeds=[0]))
    s = settings(tmp_path, rows=["scratch", "iscc", "local"], fractions=[1.0], seeds=[0], preprocess_set=change)
    studied = le.plan(s)
    groups = tmp_path / "out" / "groups"
    assert studied[0].argv == plain[0].argv + ["--out", str(groups), "ground_patches.size=2.0"]
    groups_done(s.data, s.train_sequences)  # the data root's groups are not the study's
    assert not studied[0].finished()
    groups_done(groups, s.train_sequences)
    assert studied[0].finished()
    for before, after in zip(plain[1:], studied[1:], strict=True):
        if after.kind != "pretrain":
            assert after.argv == before.argv  # fine-tuning identical in every study
            continue
        added = [f"data.train.groups_root={groups}", "data.train.group_params.ground_patches.size=2.0"]
        assert [x for x in after.overrides if x not in added] == before.overrides
        assert all(x in after.overrides for x in added) and after.argv[-len(after.overrides):] == after.overrides
    with pytest.raises(SystemExit):
        le.parse_args(["--pretrain-set", f"data.train.groups_root={groups}"])  # the benchmark sets it


def test_rows_complete_one_after_another(tmp_path):
    """Row by row: a row's fine-tunes start as soon as its encoder exists, before the next
    pretraining, which takes a core only when no fine-tune is ready; so a benchmark stopped
    half-way has whole rows."""
    s = settings(tmp_path, rows=["scratch", "iscc", "occ2", "local"], fractions=[1.0], seeds=[0, 1, 2])
    groups_done(s.data, s.train_sequences)
    jobs = le.plan(s)
    assert [j.name for j in jobs] == ["preprocess", "pretrain_iscc", *(f"scratch/1pct_seed{k}" for k in range(3)),
                                      *(f"iscc/1pct_seed{k}" for k in range(3)), "pretrain_occ2",
                                      *(f"occ2/1pct_seed{k}" for k in range(3)), "pretrain_local",
                                      *(f"local/1pct_seed{k}" for k in range(3))]
    launched: list = []
    FakeProcess.running = set()

    def launch(job):
        launched.append(job.name)
        return FakeProcess(job)

    le.run_jobs(jobs, 2, launch=launch, poll_s=0, say=lambda *_: None)
    # every job takes two polls: pretrain_occ2 is done while the last ISCC fine-tune runs, and its
    # row's fine-tunes then go before pretrain_local
    assert launched == ["pretrain_iscc", "scratch/1pct_seed0", "scratch/1pct_seed1", "scratch/1pct_seed2",
                        "iscc/1pct_seed0", "iscc/1pct_seed1", "iscc/1pct_seed2", "pretrain_occ2",
                        "occ2/1pct_seed0", "occ2/1pct_seed1", "occ2/1pct_seed2", "pretrain_local",
                        "local/1pct_seed0", "local/1pct_seed1", "local/1pct_seed2"]


def test_plan_ablation_rows_and_finished_groups(tmp_path):
    s = settings(tmp_path, rows=["scratch", "iscc", "occ2", "occ8", "full200"], fractions=[1.0], seeds=[0])
    groups_done(s.data, s.train_sequences)
    jobs = le.plan(s)
    assert jobs[0].finished()  # the groups exist: preprocessing is not rerun
    pretrain = {j.row: j for j in jobs if j.kind == "pretrain"}
    assert list(pretrain) == ["iscc", "occ2", "occ8", "full200"]
    assert "model.occupancy_bins=2" in pretrain["occ2"].argv and "model.use_local=false" in pretrain["occ2"].argv
    assert "model.occupancy_bins=8" in pretrain["occ8"].argv and "model.num_prototypes=200" in pretrain["full200"].argv
    assert [j.after for j in jobs if j.kind == "finetune"] == [[], ["pretrain_iscc"], ["pretrain_occ2"],
                                                              ["pretrain_occ8"], ["pretrain_full200"]]


def test_ablation_rows_are_the_base_configs_header_and_name_their_public_method():
    header = (ROOT / "configs" / "_base_" / "models" / "minkunet14a_iscc.yaml").read_text()
    lines = {m.group(1): m.group(2).split()
             for m in re.finditer(r"^#   (\S+)\s+(model\.[^(\n]*?)\s*(?:\(|$)", header, re.M)}
    assert lines["occ-only(K)"] == ["model.use_local=false", "model.use_global=false", "model.occupancy_bins=K"]
    for row in le.ABLATIONS:
        name, overrides, _ = le.ROWS[row]
        k = re.search(r"\((\d+)\)", name)
        key = re.sub(r"\(\d+\)", "(K)" if row.startswith("occ") else "(M)", name)
        expected = [o.replace("=K", f"={k.group(1)}").replace("=M", f"={k.group(1)}") if k else o for o in lines[key]]
        assert overrides == expected, row
    # the two rows that are the field's baselines (issue 20)
    assert le.ROWS["local"].closest == "SegContrast (segment contrast, momentum teacher)"
    assert le.ROWS["occ2"].closest == "ALSO (binary occupancy)" and le.ROWS["occ2"].name == "occ-only(2)"
    assert le.PRESETS["ablation"] == ["scratch", "iscc", "occ2", "occ8", "occ16", "occ32", "local", "global",
                                      "full100", "full200"]


def test_seeds_per_fraction_and_the_recorded_protocol(tmp_path):
    args = le.parse_args(["--fractions", "1", "10", "--seeds", "0", "--seeds-at", "1", "2", "0", "--rows", "iscc",
                          "occ2", "--ablation-fractions", "10", "--ablation-seeds", "3"])
    assert args.seeds_by_fraction == {1.0: [0, 2], 10.0: [0]}
    assert le.make_cells(["scratch", "iscc", "occ2"], args.seeds_by_fraction, args.ablation_fractions,
                         args.ablation_seeds) == {"scratch": {1.0: [0, 2], 10.0: [0, 3]},  # scratch pairs seed 3
                                                  "iscc": {1.0: [0, 2], 10.0: [0]}, "occ2": {10.0: [3]}}
    args = le.parse_args(["--recorded"])
    assert args.record == le.RECORD == ROOT / "benchmarks" / "results" / "label_efficiency.json"
    s = settings(tmp_path, cells=le.make_cells(le.PRESETS["ablation"], args.seeds_by_fraction, args.ablation_fractions,
                                               args.ablation_seeds))
    jobs = le.plan(s)
    counts = {}
    for job in jobs:
        if job.kind == "finetune":
            counts.setdefault(job.row, {}).setdefault(job.fraction, []).append(job.seed)
    # >= 5 seeds at 1% and 2%, >= 3 at 5% and 10%; every ablation row at 1% and 10% with 3 seeds
    assert counts["scratch"] == counts["iscc"] == {1.0: [0, 1, 2, 3, 4], 2.0: [0, 1, 2, 3, 4], 5.0: [0, 1, 2],
                                                   10.0: [0, 1, 2]}
    assert all(counts[row] == {1.0: [0, 1, 2], 10.0: [0, 1, 2]} for row in le.ABLATIONS)
    assert sum(j.kind == "pretrain" for j in jobs) == 9 and sum(j.kind == "finetune" for j in jobs) == 80


@pytest.mark.parametrize("argv, message", [
    (["--recorded", "--seeds", "0"], "--recorded fixes the fractions, seeds and rows: drop --seeds"),
    (["--seeds-at", "3", "0"], "--seeds-at 3 0: a fraction of --fractions, then at least one seed"),
    (["--seeds-at", "1", "x"], "--seeds-at 1 x: a fraction, then integer seeds"),
    (["--ablation-fractions", "3"], "--ablation-fractions: fractions of --fractions"),
    (["--pretrain-set", "model.use_local"], "--pretrain-set model.use_local: KEY=VALUE, e.g. "
                                            "data.train.mask_ratio=0.5"),
    (["--pretrain-set", "train.max_steps=9"], "--pretrain-set train.max_steps=9: the benchmark sets train.max_steps "
                                              "(use --pretrain-steps)"),
    (["--pretrain-set", "train.threads=2"], "--pretrain-set train.threads=2: the benchmark sets train.threads"),
])
def test_bad_protocol_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        le.parse_args(argv)
    assert exc.value.code == 2
    assert re.fullmatch(rf"\S+: error: {re.escape(message)}", capsys.readouterr().err.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- the runner
class FakeProcess:
    """Finishes on its second poll, writing what the real tool writes (or nothing, if failing)."""

    running: set = set()
    peak = 0

    def __init__(self, job, rc=0):
        self.job, self.rc, self.polls = job, rc, 0
        FakeProcess.running.add(job.name)
        FakeProcess.peak = max(FakeProcess.peak, len(FakeProcess.running))

    def send_signal(self, signum):  # Ctrl-C: run_jobs stops what runs
        FakeProcess.running.discard(self.job.name)

    def wait(self, timeout=None):
        return 0

    def poll(self):
        self.polls += 1
        if self.polls < 2:
            return None
        FakeProcess.running.discard(self.job.name)
        if self.rc == 0:
            d = self.job.run_dir
            (d / "checkpoints").mkdir(parents=True, exist_ok=True)
            if self.job.kind == "pretrain":
                (d / "checkpoints" / "encoder.pt").write_text("x")
            elif self.job.kind == "finetune":
                (d / "metrics.json").write_text(json.dumps({"step": 5, "miou": 0.5}))
                (d / "label_subset.txt").write_text(f"{self.job.fraction} {self.job.seed}\n")
        return self.rc


def test_runner_order_parallelism_reuse_and_resume(tmp_path):
    s = settings(tmp_path, fractions=[1.0, 2.0], seeds=[0])
    groups_done(s.data, s.train_sequences)
    jobs = le.plan(s)
    by_name = {j.name: j for j in jobs}
    # a finished run (metrics.json) is reused, an interrupted one (last.pt) resumes
    done, half = by_name["scratch/1pct_seed0"], by_name["scratch/2pct_seed0"]
    done.run_dir.mkdir(parents=True)
    (done.run_dir / "metrics.json").write_text(json.dumps({"step": 5, "miou": 0.25}))
    (done.run_dir / "label_subset.txt").write_text("1.0 0\n")
    (half.run_dir / "checkpoints").mkdir(parents=True)
    (half.run_dir / "checkpoints" / "last.pt").write_text("x")
    launched, commands = [], {}
    FakeProcess.running, FakeProcess.peak = set(), 0

    def launch(job):
        launched.append(job.name)
        commands[job.name] = job.command()
        return FakeProcess(job)

    status = le.run_jobs(jobs, 2, launch=launch, poll_s=0, say=lambda *_: None)
    assert status == {"preprocess": "reused", "scratch/1pct_seed0": "reused", "pretrain_iscc": "done",
                      "scratch/2pct_seed0": "done", "iscc/1pct_seed0": "done", "iscc/2pct_seed0": "done"}
    assert launched[:2] == ["pretrain_iscc", "scratch/2pct_seed0"]  # the scratch run beside the pretraining
    assert FakeProcess.peak == 2
    assert commands["scratch/2pct_seed0"][-1] == "--resume" and "--resume" not in commands["iscc/1pct_seed0"]
    # a second benchmark run reuses everything and launches nothing
    again = le.run_jobs(jobs, 2, launch=lambda job: pytest.fail(f"{job.name} rerun"), poll_s=0, say=lambda *_: None)
    assert set(again.values()) == {"reused"}
    assert le.read_results(jobs, again, 5) == ({("scratch", 1.0, 0): 0.25, ("scratch", 2.0, 0): 0.5,
                                                ("iscc", 1.0, 0): 0.5, ("iscc", 2.0, 0): 0.5}, {})
    assert le.check_subsets(jobs, again) == 2
    with pytest.raises(le.BenchError, match="ended at step 5, not 6"):
        le.read_results(jobs, again, 6)


def test_runner_failed_pretraining_skips_its_finetunes_only(tmp_path):
    s = settings(tmp_path, fractions=[1.0], seeds=[0, 1])
    groups_done(s.data, s.train_sequences)
    jobs = le.plan(s)
    FakeProcess.running = set()
    lines = []
    status = le.run_jobs(jobs, 2, launch=lambda job: FakeProcess(job, rc=1 if job.kind == "pretrain" else 0),
                         poll_s=0, say=lines.append)
    assert status["pretrain_iscc"] == "failed"
    assert status["iscc/1pct_seed0"] == status["iscc/1pct_seed1"] == "skipped"
    assert status["scratch/1pct_seed0"] == status["scratch/1pct_seed1"] == "done"
    assert any("FAILED pretrain_iscc" in line for line in lines)


def test_different_subsets_and_reused_runs_of_other_settings_are_refused(tmp_path):
    s = settings(tmp_path, fractions=[1.0], seeds=[0])
    jobs = [j for j in le.plan(s) if j.kind == "finetune"]
    for job, text in zip(jobs, ["000000\n", "000001\n"], strict=True):
        job.run_dir.mkdir(parents=True)
        (job.run_dir / "label_subset.txt").write_text(text)
    with pytest.raises(le.BenchError, match="same labelled scans"):
        le.check_subsets(jobs, {j.name: "done" for j in jobs})
    # a finished run's config.yaml must have the benchmark's settings (output_dir, device aside)
    job = jobs[0]
    config = {"data": {"root": str(s.data), "label_config": str(s.label_config),
                       "train": {"sequences": ["00", "01"]}, "val": {"sequences": ["02"]}},
              "model": {"backbone": {"voxel_size": 0.2}},
              "train": {"max_steps": 5, "batch_size": 1, "label_fraction": 0.01, "seed": 0, "val_every": 0,
                        "val_max_scans": 0, "threads": 1, "progress": True, "device": "cuda"},
              "output_dir": "elsewhere"}
    (job.run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    le.check_reused(job)
    config["train"]["max_steps"] = 300
    (job.run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(le.BenchError, match="train.max_steps is 300, the benchmark asks 5"):
        le.check_reused(job)


def test_default_budget_fits_90_minutes_on_2_cores(tmp_path):
    s = settings(tmp_path, pretrain_steps=le.DEFAULT_PRETRAIN_STEPS, finetune_steps=le.DEFAULT_FINETUNE_STEPS)
    args = le.parse_args([])  # the default invocation plans what this test measures
    assert le.make_cells([le.SCRATCH] + args.rows, args.seeds_by_fraction) == s.cells
    groups_done(s.data, s.train_sequences)
    jobs = le.plan(s)
    assert sum(j.kind == "finetune" for j in jobs) == 16 and sum(j.kind == "pretrain" for j in jobs) == 1
    assert le.estimate(jobs, 2, s, slow=True) < 90 * 60
    # the plan's order matters: scratch runs fill the second core while the pretraining runs
    typical = le.estimate(jobs, 2, s)
    pretrain = le.PRETRAIN_FIXED_S + s.pretrain_steps * le.PRETRAIN_STEP_S
    finetune = le.FINETUNE_FIXED_S + s.finetune_steps * le.FINETUNE_STEP_S
    assert typical == pytest.approx(max(pretrain, 8 * finetune) + 4 * finetune)


# -------------------------------------------------------------------------------- the code identity
def code_tree(root: Path) -> Path:
    files = {"voxseg/a.py": "x = 1\n", "voxseg/sub/b.py": "y = 2\n", "configs/c.yaml": "k: 1\n",
             "voxseg/NOTES.md": "notes\n", "voxseg/__pycache__/a.cpython-312.pyc": "bytecode", "data/d.py": "z\n"}
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_code_hash_is_the_code_files_bytes_only(tmp_path):
    root = code_tree(tmp_path)
    expected = hashlib.sha256()
    for path in ["configs/c.yaml", "voxseg/a.py", "voxseg/sub/b.py"]:  # sorted; no .md, .pyc or data/
        expected.update(path.encode() + b"\0" + hashlib.sha256((root / path).read_bytes()).digest())
    first = code_hash(root)
    assert first == expected.hexdigest()
    (root / "voxseg" / "NOTES.md").write_text("other notes\n")
    (root / "data" / "d.py").write_text("elsewhere\n")
    (root / "voxseg" / "a.py").touch()
    assert code_hash(root) == first  # documentation, files outside the code folders, timestamps
    (root / "voxseg" / "a.py").write_text("x = 2\n")  # one changed byte
    assert code_hash(root) != first
    (root / "voxseg" / "a.py").write_text("x = 1\n")
    assert code_hash(root) == first
    (root / "tools").mkdir()
    (root / "tools" / "new.py").write_text("")  # a new, empty tool
    assert code_hash(root) != first
    assert code_identity(root) == {"code_hash": code_hash(root), "commit": None, "dirty": None}  # no git


def test_code_identity_commit_and_dirty(tmp_path):
    root = code_tree(tmp_path)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "c"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert code_identity(root) == {"code_hash": code_hash(root), "commit": commit, "dirty": False}
    (root / "voxseg" / "NOTES.md").write_text("changed notes\n")
    assert code_identity(root)["dirty"] is False  # not code
    (root / "voxseg" / "new.py").write_text("")
    assert code_identity(root)["dirty"] is True  # an untracked module
    (root / "voxseg" / "new.py").unlink()
    (root / "configs" / "c.yaml").write_text("k: 2\n")
    assert code_identity(root)["dirty"] is True


def finish(job, code: dict | None, miou=0.5) -> None:
    """A fake finished run folder: what the tool writes, and the benchmark's code.json."""
    (job.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    if job.kind == "pretrain":
        (job.run_dir / "checkpoints" / "encoder.pt").write_text("x")
    else:
        (job.run_dir / "metrics.json").write_text(json.dumps({"step": 5, "miou": miou}))
        (job.run_dir / "label_subset.txt").write_text(f"{job.fraction} {job.seed}\n")
    if code is not None:
        (job.run_dir / "code.json").write_text(json.dumps(code))


def test_runs_of_this_code_are_reused_other_code_and_their_dependents_rerun(tmp_path):
    source = code_tree(tmp_path / "src")
    made_with = code_identity(source)
    s = settings(tmp_path, fractions=[1.0], seeds=[0, 1], code=made_with)
    groups_done(s.data, s.train_sequences)
    jobs = le.plan(s)
    by_name = {j.name: j for j in jobs}
    for job in jobs[1:]:
        finish(job, made_with)
    assert le.stale_runs(jobs, code_identity(source)) == {}  # same hash: everything reused
    # one changed source byte: every run was made by other code
    (source / "voxseg" / "a.py").write_text("x = 3\n")
    now = code_identity(source)
    old, new = made_with["code_hash"][:12], now["code_hash"][:12]
    why = f"made by code {old} (no commit), this is code {new} (no commit)"
    assert le.stale_runs(jobs, now) == {name: why for name in by_name if name != "preprocess"}
    # runs made by this code are reused, but not a fine-tune of an encoder that is made again
    for name in ("scratch/1pct_seed0", "iscc/1pct_seed0", "iscc/1pct_seed1"):
        (by_name[name].run_dir / "code.json").write_text(json.dumps(now))
    (by_name["scratch/1pct_seed1"].run_dir / "code.json").unlink()  # made before code was recorded
    assert le.stale_runs(jobs, now) == {
        "pretrain_iscc": why, "iscc/1pct_seed0": "pretrain_iscc runs again first",
        "iscc/1pct_seed1": "pretrain_iscc runs again first",
        "scratch/1pct_seed1": f"its code is not recorded (no code.json), this is code {new} (no commit)"}
    # an interrupted run counts too: its checkpoint must not be resumed by other code
    (by_name["scratch/1pct_seed0"].run_dir / "metrics.json").unlink()
    (by_name["scratch/1pct_seed0"].run_dir / "checkpoints" / "last.pt").write_text("x")
    assert "scratch/1pct_seed0" not in le.stale_runs(jobs, now)
    (by_name["scratch/1pct_seed0"].run_dir / "code.json").write_text(json.dumps(made_with))
    assert le.stale_runs(jobs, now)["scratch/1pct_seed0"] == why


def test_stale_runs_are_set_aside_and_rerun_reused_ones_untouched(tmp_path):
    s = settings(tmp_path, fractions=[1.0], seeds=[0])
    groups_done(s.data, s.train_sequences)
    jobs = le.plan(s)
    by_name = {j.name: j for j in jobs}
    old = CODE | {"code_hash": "0123456789ab" + "0" * 52}
    finish(by_name["pretrain_iscc"], CODE)
    finish(by_name["scratch/1pct_seed0"], old, 0.25)
    finish(by_name["iscc/1pct_seed0"], None, 0.3125)
    kept = {p: p.read_bytes() for p in by_name["pretrain_iscc"].run_dir.rglob("*") if p.is_file()}
    moved = (by_name["scratch/1pct_seed0"].run_dir / "metrics.json").read_bytes()
    stale = s.out / "stale"
    assert le.set_aside_stale(jobs, CODE, s.out) == [
        f"rerun scratch/1pct_seed0: made by code 0123456789ab (commit 439dd03), this is code c0dec0dec0de (commit "
        f"439dd03) (the old run is in {stale / '0123456789ab' / 'scratch' / '1pct_seed0'})",
        f"rerun iscc/1pct_seed0: its code is not recorded (no code.json), this is code c0dec0dec0de (commit 439dd03) "
        f"(the old run is in {stale / 'unrecorded' / 'iscc' / '1pct_seed0'})"]
    assert not by_name["scratch/1pct_seed0"].run_dir.exists() and not by_name["iscc/1pct_seed0"].run_dir.exists()
    assert (stale / "0123456789ab" / "scratch" / "1pct_seed0" / "metrics.json").read_bytes() == moved
    assert {p: p.read_bytes() for p in by_name["pretrain_iscc"].run_dir.rglob("*") if p.is_file()} == kept
    status = le.run_jobs(jobs, 2, launch=FakeProcess, poll_s=0, say=lambda *_: None)
    assert status == {"preprocess": "reused", "pretrain_iscc": "reused", "scratch/1pct_seed0": "done",
                      "iscc/1pct_seed0": "done"}
    # a second set-aside of the same run replaces the older copy
    finish(by_name["scratch/1pct_seed0"], old, 0.375)
    le.set_aside_stale(jobs, CODE, s.out)
    assert json.loads((stale / "0123456789ab" / "scratch" / "1pct_seed0" / "metrics.json").read_text())["miou"] == 0.375


def test_a_launch_after_the_code_changed_fails_and_a_launch_records_the_code(tmp_path, monkeypatch):
    s = settings(tmp_path, fractions=[1.0], seeds=[0], code={"code_hash": "0" * 64, "commit": None, "dirty": None})
    groups_done(s.data, s.train_sequences)
    jobs = le.plan(s)
    lines = []
    status = le.run_jobs(jobs, 2, launch=le.start_process, poll_s=0, say=lines.append)
    assert status == {"preprocess": "reused", "pretrain_iscc": "failed", "scratch/1pct_seed0": "failed",
                      "iscc/1pct_seed0": "skipped"}
    now = code_hash()[:12]
    assert lines[0].split(" ", 1)[1] == (f"FAILED pretrain_iscc: the code changed since the benchmark started "
                                         f"(000000000000, now {now}): rerun the benchmark, which reruns what other "
                                         "code made")
    assert not (s.out / "pretrain_iscc").exists() and not (s.out / "scratch").exists()  # nothing written
    # with this code: code.json holds the identity, then the tool runs, a script outside ROOT (as
    # tools/ is: its own folder leads sys.path) that imports ROOT's voxseg through PYTHONPATH
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nimport voxseg\nprint(os.environ['PYTHONPATH'], voxseg.__file__)\n")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    job = le.Job("probe", "finetune", [sys.executable, str(probe)], tmp_path / "probe", code_identity())
    assert le.start_process(job).wait() == 0
    assert json.loads((job.run_dir / "code.json").read_text()) == job.code
    imported = ROOT / "voxseg" / "__init__.py"
    assert (job.run_dir / "bench.log").read_text() == (f"$ {sys.executable} {probe}\n"
                                                       f"{ROOT}{os.pathsep}/elsewhere {imported}\n")


# ------------------------------------------------------------------------------- reproducibility
class Rerun:
    """A fake launch of a verifying rerun: writes the checkpoint and metrics `make` gives for it."""

    def __init__(self, make):
        self.make, self.launched = make, []

    def __call__(self, job):
        import torch

        self.launched.append(job)
        tensors, miou = self.make(job)
        (job.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        name = "encoder.pt" if job.kind == "pretrain" else "last.pt"
        torch.save(tensors, job.run_dir / "checkpoints" / name)
        if job.kind == "finetune":
            (job.run_dir / "metrics.json").write_text(json.dumps({"step": 5, "miou": miou}))
        return self

    def poll(self) -> int:  # the process, already exited with success
        return 0


def original_run(job, tensors, miou=0.5) -> None:
    import torch

    finish(job, CODE, miou)
    torch.save(tensors, job.run_dir / "checkpoints" / ("encoder.pt" if job.kind == "pretrain" else "last.pt"))


def test_verify_reruns_into_verify_and_compares_exactly(tmp_path):
    import torch

    s = settings(tmp_path, fractions=[1.0], seeds=[0])
    groups_done(s.data, s.train_sequences)
    jobs = {j.name: j for j in le.plan(s)}
    weights = {"model": {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}, "rng": torch.tensor([7])}
    original_run(jobs["scratch/1pct_seed0"], weights, miou=0.3953655238452738)
    original_run(jobs["pretrain_iscc"], {"backbone.w": torch.tensor([3.0])})
    (tmp_path / "out" / "verify" / "scratch" / "1pct_seed0").mkdir(parents=True)
    (tmp_path / "out" / "verify" / "scratch" / "1pct_seed0" / "old.txt").write_text("an older verification")
    same = Rerun(lambda job: ({"model": {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])},
                               "rng": torch.tensor([7])}, 0.3953655238452738) if job.kind == "finetune"
                 else ({"backbone.w": torch.tensor([3.0])}, None))
    lines = []
    assert le.verify(list(jobs.values()), ["scratch/1pct_seed0", "pretrain_iscc"], s.out, launch=same,
                     say=lines.append) == 0
    rerun = tmp_path / "out" / "verify" / "scratch" / "1pct_seed0"
    command = same.launched[0].command()
    assert command[:-1] == jobs["scratch/1pct_seed0"].argv[:-1] and command[-1] == f"output_dir={rerun}"
    assert same.launched[0].after == [] and not (rerun / "old.txt").exists()
    assert lines[-2:] == [
        f"scratch/1pct_seed0: reproduced exactly: mIoU 0.3953655238452738 then 0.3953655238452738; 3 tensors of "
        f"last.pt equal ({rerun})",
        "pretrain_iscc: reproduced exactly: 1 tensors of encoder.pt equal "
        f"({tmp_path / 'out' / 'verify' / 'pretrain_iscc'})"]

    # one weight off in the last bit, or the same weights with another mIoU: not reproduced
    off = torch.tensor([1.0, torch.nextafter(torch.tensor(2.0), torch.tensor(3.0)).item()])
    lines = []
    differ = Rerun(lambda job: ({"model": {"w": off, "b": torch.tensor([0.5])}, "rng": torch.tensor([7])},
                                0.3953655238452738))
    assert le.verify(list(jobs.values()), ["scratch/1pct_seed0"], s.out, launch=differ, say=lines.append) == 1
    assert lines[-1] == (f"scratch/1pct_seed0: NOT reproduced: mIoU 0.3953655238452738 then 0.3953655238452738; "
                         f"1 of 3 tensors of last.pt differ (model.w) ({rerun})")
    lines = []
    other_miou = Rerun(lambda job: (weights, 0.3953655238452739))
    assert le.verify(list(jobs.values()), ["scratch/1pct_seed0"], s.out, launch=other_miou, say=lines.append) == 1
    assert lines[-1].startswith("scratch/1pct_seed0: NOT reproduced: mIoU 0.3953655238452738 then 0.3953655238452739")


def test_verify_refuses_what_it_cannot_verify(tmp_path):
    s = settings(tmp_path, fractions=[1.0], seeds=[0])
    jobs = le.plan(s)
    never = Rerun(lambda job: pytest.fail("launched"))
    with pytest.raises(le.BenchError) as exc:
        le.verify(jobs, ["scratch/3pct_seed0"], s.out, launch=never)
    assert str(exc.value) == ("--verify scratch/3pct_seed0: not a run of this plan (a fine-tune such as "
                              "scratch/1pct_seed0, or a pretraining)")
    with pytest.raises(le.BenchError) as exc:
        le.verify(jobs, ["iscc/1pct_seed0"], s.out, launch=never)
    assert str(exc.value) == (f"--verify iscc/1pct_seed0: {s.out / 'iscc' / '1pct_seed0'} has not finished; "
                              "run the benchmark first")


def test_machine_info_names_the_machine():
    import os

    import torch

    machine = machine_info("cpu")
    assert (machine["device"], machine["gpu"], machine["cpus"], machine["torch"]) == \
        ("cpu", None, os.cpu_count(), torch.__version__)
    # the CPU, and the OpenBLAS kernels MinkowskiEngine multiplies with: voxseg's choice (or the
    # user's) where OPENBLAS_CORETYPE is set, else OpenBLAS's own
    kernels = os.environ.get("OPENBLAS_CORETYPE")
    assert machine["cpu"].startswith(f"{cpu_identity()}, OpenBLAS ")
    assert kernels is None or machine["cpu"] == f"{cpu_identity()}, OpenBLAS {kernels}"


def test_cpu_identity_names_the_model_and_its_widest_vector_instructions(tmp_path):
    info = tmp_path / "cpuinfo"
    core = ("processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
            "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx avx2 {extra}\n\n")
    info.write_text(core.format(n=0, extra="avx512f avx512bw") + core.format(n=1, extra="avx512f avx512bw"))
    assert cpu_identity(info) == "Intel(R) Xeon(R) Processor (family 6 model 207, avx512)"
    info.write_text(core.format(n=0, extra=""))
    assert cpu_identity(info) == "Intel(R) Xeon(R) Processor (family 6 model 207, avx2)"
    assert describe_cpus({"cpus": 2, "cpu": "X (family 6 model 1, avx2)"}) == "2 CPUs (X (family 6 model 1, avx2))"
    assert describe_cpus({"cpus": 2}) == "2 CPUs"  # a record made before the CPU was recorded


# --------------------------------------------------------------------- the record, the results page
def fake_record() -> dict:
    """A record as the benchmark writes it: scratch and ISCC at 1% (seeds 0, 1) and 10% (seed 0,
    ISCC's missing), occ-only(2) at 1% seed 0."""
    runs = [("scratch", 1.0, 0, 0.25), ("scratch", 1.0, 1, 0.5), ("scratch", 10.0, 0, 0.5),
            ("iscc", 1.0, 0, 0.3125), ("iscc", 1.0, 1, 0.5), ("occ2", 1.0, 0, 0.3125)]
    return {
        "settings": {"train_sequences": ["00", "01", "02", "03"], "val_sequence": "04", "val_scans": 40,
                     "cells": {"scratch": {"1": [0, 1], "10": [0]}, "iscc": {"1": [0, 1], "10": [0]},
                               "occ2": {"1": [0]}},
                     "pretrain_steps": 500, "finetune_steps": 250, "voxel_size": 0.2, "device": "auto"},
        "code": CODE,
        "machine": {"platform": "Linux-6.8-x86_64-with-glibc2.39", "processor": "x86_64", "cpus": 2,
                    "python": "3.12.3", "torch": "2.11.0", "minkowskiengine": "0.5.4", "device": "cpu", "gpu": None},
        "runs": [{"row": row, "fraction": f, "seed": seed, "miou": miou, "run_dir": f"{row}/{f:g}pct_seed{seed}",
                  "commit": CODE["commit"], "code_hash": CODE["code_hash"], "dirty": False}
                 for row, f, seed, miou in runs],
        "elapsed_s": 5880.0,
    }


EXPECTED_MARKDOWN = """\
<!-- generated by `python benchmarks/label_efficiency.py --render-readme` from benchmarks/results/label_efficiency.json: do not edit -->
| method | closest public method | 1% | 10% |
|---|---|---|---|
| No Pre-training | - | 37.5 (n=2) | 50.0 (n=1) |
| Ours (ISCC) | ISCC (Zhang, Bai, Li, CVPR 2023) | 40.6 (+3.1 [-36.6, +42.8], n=2) | - |
| occ-only(2) | ALSO (binary occupancy) | 31.2 (+6.2 [n/a], n=1) |  |

mIoU (%) on held-out sequence 04 (40 scans), the mean over n seeds; in parentheses the mean over the same seeds of the difference to No Pre-training (same labelled scans and batch order) and its paired 95% t interval. Every seed (seed: mIoU):

| method | 1% | 10% |
|---|---|---|
| No Pre-training | 0: 25.0, 1: 50.0 | 0: 50.0 |
| Ours (ISCC) | 0: 31.2, 1: 50.0 | 0: - |
| occ-only(2) | 0: 31.2 |  |

ISCC - scratch at every fraction run: 1% +3.1, 10% -: target (ahead at every fraction) not checked: 10% not measured

Ours (ISCC) - each ablation row at 1% (paired over the row's seeds): occ-only(2) +0.0 [n/a] (n=1): target (the full method at least matches every ablation row) met

At 1% labels, ISCC - scratch = +3.12 mIoU (mean of 2 seeds, 95% CI [-36.58, +42.83]): target (>= +5.0 mean over >= 5 seeds, 95% CI above 0) NOT met: mean below +5.0, 2 seeds, fewer than 5, CI not above 0

Measured at commit `439dd03` (code hash `c0dec0dec0de`): pretraining 500 steps, fine-tuning 250 steps (batch 1), voxel 0.2 m, training sequences 00 01 02 03; Linux-6.8-x86_64-with-glibc2.39, 2 CPUs, Python 3.12.3, torch 2.11.0, MinkowskiEngine 0.5.4, device cpu; the invocation that wrote this record took 98 min (it reuses finished runs)."""  # noqa: E501  (the generated page, verbatim)


def test_render_markdown_from_a_record():
    assert le.render_markdown(fake_record()) == EXPECTED_MARKDOWN.split("\n")


def fake_study() -> dict:
    """A study record: 1000 pretraining steps and a mask ratio, ISCC +6.25 on both seeds at 1%."""
    record = fake_record()
    record["settings"].update(pretrain_steps=1000, pretrain_set=["data.train.mask_ratio=0.5"],
                              preprocess_set=["ground_patches.size=2.0"])
    record["code"] = dict(CODE, dirty=True)
    for run in record["runs"]:
        if (run["row"], run["fraction"], run["seed"]) == ("iscc", 1.0, 1):
            run["miou"] = 0.5625
    return record


def studies_markdown(record: Path, study: Path) -> list[str]:
    """The studies block of fake_record() and fake_study(), computed by hand: scratch 25.0 / 50.0
    (mean 37.5); ISCC 31.25 / 50.0 (mean 40.625, differences +6.25 / 0: mean 3.125, sd 4.419,
    half-width t_{0.975,1} * 4.419 / sqrt(2) = 39.71); the study's ISCC 31.25 / 56.25 (differences
    +6.25 twice: sd 0, the interval a point)."""
    return [f"<!-- generated by `python benchmarks/label_efficiency.py --render-readme` from {record}, {study}: "
            "do not edit -->",
            "| pretraining | No Pre-training | Ours (ISCC) | ISCC - scratch [95% CI] | per seed | commit | record |",
            "|---|---|---|---|---|---|---|",
            f"| 500 steps | 37.5 (n=2) | 40.6 (n=2) | +3.1 [-36.6, +42.8] | 0: +6.2, 1: +0.0 | `439dd03` | {record} |",
            "| 1000 steps with data.train.mask_ratio=0.5; groups with ground_patches.size=2.0 | 37.5 (n=2) | "
            "43.8 (n=2) | +6.2 [+6.2, +6.2] | "
            f"0: +6.2, 1: +6.2 | `439dd03` (dirty) | {study} |",
            "",
            "mIoU (%) at 1% labels on the held-out sequence, the mean over n seeds, fine-tuning identical in every "
            "row; per seed: ISCC - scratch with the same labelled scans."]


def test_render_readme_replaces_the_marked_blocks_only(tmp_path):
    record, readme, studies = tmp_path / "record.json", tmp_path / "README.md", tmp_path / "studies"
    record.write_text(json.dumps(fake_record()))
    studies.mkdir()
    (studies / "pretrain_1000.json").write_text(json.dumps(fake_study()))
    before, between, after = "# x\n\n- **The proof:** text\n\n", "\n\nStudies:\n\n", "\n## Next\n"
    readme.write_text(before + f"  {le.TABLE_BEGIN}\n  old table\n  {le.TABLE_END}" + between
                      + f"{le.STUDIES_BEGIN}\nold studies\n{le.STUDIES_END}" + after)
    argv = ["--render-readme", "--record", str(record), "--readme", str(readme), "--studies", str(studies)]
    assert le.main(argv) == 0
    block = EXPECTED_MARKDOWN.replace(
        "benchmarks/results/label_efficiency.json", str(record)).split("\n")
    indented = "\n".join("  " + row if row else "" for row in block)
    studies_block = "\n".join(studies_markdown(record, studies / "pretrain_1000.json"))
    assert readme.read_text() == (before + f"  {le.TABLE_BEGIN}\n" + indented + f"\n  {le.TABLE_END}" + between
                                  + f"{le.STUDIES_BEGIN}\n{studies_block}\n{le.STUDIES_END}" + after)
    rendered = readme.read_bytes()
    assert le.main(argv) == 0
    assert readme.read_bytes() == rendered  # generated, so stable
    assert le.render_markdown(fake_study())[-1].startswith(
        "Measured at commit `439dd03` (code hash `c0dec0dec0de`, dirty): pretraining 1000 steps with "
        "data.train.mask_ratio=0.5; groups with ground_patches.size=2.0, fine-tuning 250 steps")


def test_a_study_that_cannot_be_compared_leaves_the_page(tmp_path):
    record, readme, studies = tmp_path / "record.json", tmp_path / "README.md", tmp_path / "studies"
    record.write_text(json.dumps(fake_record()))
    studies.mkdir()
    study = fake_study()
    study["settings"]["cells"] = {"scratch": {"10": [0]}, "iscc": {"10": [0]}}
    (studies / "ten.json").write_text(json.dumps(study))
    readme.write_text(f"{le.TABLE_BEGIN}\nold\n{le.TABLE_END}\n{le.STUDIES_BEGIN}\nold\n{le.STUDIES_END}\n")
    original = readme.read_bytes()
    with pytest.raises(le.BenchError) as exc:
        le.main(["--render-readme", "--record", str(record), "--readme", str(readme), "--studies", str(studies)])
    assert str(exc.value) == f"{studies / 'ten.json'}: no Ours (ISCC) and No Pre-training runs at 1% to compare"
    assert readme.read_bytes() == original


def test_render_readme_refuses_bad_input_and_leaves_the_readme(tmp_path):
    record, readme = tmp_path / "record.json", tmp_path / "README.md"
    readme.write_text(f"{le.TABLE_BEGIN}\nold\n{le.STUDIES_BEGIN}\nold\n{le.STUDIES_END}\n")  # no end marker
    original = readme.read_bytes()
    paths = ["--record", str(record), "--readme", str(readme), "--studies", str(tmp_path / "none")]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "label_efficiency.py"), "--render-readme",
                           *paths], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {record}: no recorded result; `python benchmarks/label_efficiency.py "
                                   "--recorded` writes it")
    record.write_text(json.dumps({"settings": {}, "runs": []}))
    with pytest.raises(le.BenchError) as exc:
        le.main(["--render-readme", *paths])
    assert str(exc.value) == f"{record}: not a label-efficiency record (no code, machine, elapsed_s)"
    record.write_text(json.dumps(fake_record()))
    with pytest.raises(le.BenchError) as exc:
        le.main(["--render-readme", *paths])
    assert str(exc.value) == (f"{readme}: needs one '<!-- label-efficiency:begin -->' line and one "
                              "'<!-- label-efficiency:end -->' line after it")
    assert readme.read_bytes() == original


def test_summary_document_and_when_it_may_be_the_record(tmp_path):
    s = settings(tmp_path, fractions=[1.0], seeds=[0])
    jobs = [j for j in le.plan(s) if j.kind == "finetune"]
    for job, miou in zip(jobs, [0.25, 0.3125], strict=True):
        finish(job, CODE, miou)
    status = {"preprocess": "reused", "pretrain_iscc": "done", "scratch/1pct_seed0": "done", "iscc/1pct_seed0": "done"}
    miou, class_iou = le.read_results(jobs, status, 5)
    assert class_iou == {}  # the fake runs keep no IoU per class
    machine = fake_record()["machine"]
    summary = le.summary_document(s, jobs, status, miou, machine, 2, 40, 60.0)
    subset = hashlib.sha256(b"1.0 0\n").hexdigest()
    assert summary["runs"] == [
        {"row": "scratch", "fraction": 1.0, "seed": 0, "miou": 0.25, "run_dir": "scratch/1pct_seed0",
         "commit": CODE["commit"], "code_hash": CODE["code_hash"], "dirty": False, "label_subset_sha256": subset,
         "cpu": None},
        {"row": "iscc", "fraction": 1.0, "seed": 0, "miou": 0.3125, "run_dir": "iscc/1pct_seed0",
         "commit": CODE["commit"], "code_hash": CODE["code_hash"], "dirty": False, "label_subset_sha256": subset,
         "cpu": None}]
    assert summary["complete"] is True
    assert summary["settings"]["cells"] == {"scratch": {"1": [0]}, "iscc": {"1": [0]}}
    assert (summary["settings"]["pretrain_steps"], summary["settings"]["pretrain_set"]) == (7, [])
    studied = le.summary_document(settings(tmp_path, fractions=[1.0], seeds=[0], pretrain_set=["model.momentum=0.99"]),
                                  jobs, status, miou, machine, 2, 40, 60.0)
    assert studied["settings"]["pretrain_set"] == ["model.momentum=0.99"]
    assert (summary["code"], summary["machine"], summary["failed"]) == (CODE, machine, [])
    assert summary["target"]["mean_delta"] == 6.25
    assert le.record_problem(summary) is None
    # the record is rendered from what summary_document writes
    assert le.render_markdown(json.loads(json.dumps(summary)))[3] == "| No Pre-training | - | 25.0 (n=1) |"
    assert le.record_problem(summary | {"failed": ["iscc/1pct_seed0"]}) == "1 job failed or skipped"
    assert le.record_problem(summary | {"code": CODE | {"dirty": True}}) == \
        "the code differs from commit 439dd03 (dirty): commit it and rerun"
    assert le.record_problem(summary | {"code": CODE | {"commit": None}}) == "no git commit names the code"
    other = summary | {"runs": [summary["runs"][0] | {"code_hash": "1" * 64}, summary["runs"][1]]}
    assert le.record_problem(other) == "1 run was made by other code (scratch/1pct_seed0)"


RUN_JOBS = le.run_jobs  # the real runner, which fake_benchmark wraps


class Tool(FakeProcess):
    """A faked tool that finishes at once, saving its config (its overrides applied) and, for a
    fine-tune, ISCC 6.25 points above scratch at every seed (car +25, road -25)."""

    def poll(self):
        self.polls = 1  # finishes at once
        rc = super().poll()
        config: dict = {}
        for item in self.job.overrides:
            key, _, raw = item.partition("=")
            *parents, leaf = key.split(".")
            node = config
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(raw)
        (self.job.run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        if self.job.kind == "finetune":
            miou = 0.3125 if self.job.row == "iscc" else 0.25
            per_class = {"car": 0.5, "road": 0.25} if self.job.row == "iscc" else {"car": 0.25, "road": 0.5}
            (self.job.run_dir / "metrics.json").write_text(json.dumps({"step": 5, "miou": miou,
                                                                        "iou_per_class": per_class}))
        return rc


def fake_benchmark(tmp_path: Path, monkeypatch, launched: list | None = None, stop_at: str | None = None):
    """The whole benchmark with the tools faked (Tool): each launch writes code.json as
    start_process does and is appended to `launched`; launching `stop_at` is a Ctrl-C. Returns
    the argv (1%, seeds 0-4) and the record's path."""
    data, out, record = tmp_path / "data", tmp_path / "out", tmp_path / "results" / "label_efficiency.json"
    groups_done(data, ["00"])
    (data / "sequences" / "02" / "velodyne").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (data / "sequences" / "02" / "velodyne" / f"{i:06d}.bin").write_bytes(b"")

    def launch(job):
        if job.name == stop_at:
            raise KeyboardInterrupt
        if launched is not None:
            launched.append(job.name)
        job.run_dir.mkdir(parents=True, exist_ok=True)
        (job.run_dir / "code.json").write_text(json.dumps(job.code))
        return Tool(job)

    monkeypatch.setattr(le, "run_jobs", lambda jobs, parallel, **kw: RUN_JOBS(jobs, parallel, launch=launch, poll_s=0,
                                                                              **kw))
    monkeypatch.setattr(le, "code_identity", lambda: CODE)
    monkeypatch.setattr(le, "machine_info", lambda device: fake_record()["machine"])
    argv = ["--data", str(data), "--train-sequences", "00", "--val-sequence", "02", "--fractions", "1",
            "--seeds", "0", "1", "2", "3", "4", "--pretrain-steps", "7", "--finetune-steps", "5", "--device", "cpu",
            "--out", str(out), "--record", str(record)]
    return argv, record


def test_main_prints_the_verdict_last_and_writes_the_record(tmp_path, monkeypatch, capsys):
    argv, record = fake_benchmark(tmp_path, monkeypatch)
    out = tmp_path / "out"
    assert le.main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == ("At 1% labels, ISCC - scratch = +6.25 mIoU (mean of 5 seeds, 95% CI [+6.25, +6.25]): "
                           "target (>= +5.0 mean over >= 5 seeds, 95% CI above 0) met")
    assert (f"record: {record} (the table in docs/results.md: python benchmarks/label_efficiency.py --render-readme)"
            in printed)
    written = json.loads(record.read_text())
    assert written == json.loads((out / "summary.json").read_text())
    assert [(r["row"], r["seed"], r["miou"], r["code_hash"]) for r in written["runs"]] == \
        [(row, seed, 0.25 if row == "scratch" else 0.3125, CODE["code_hash"]) for row in ("scratch", "iscc")
         for seed in range(5)]
    assert written["runs"][0]["iou_per_class"] == {"car": 0.25, "road": 0.5}  # kept from metrics.json
    assert [line.split() for line in printed[-5:-3]] == [["method", "car", "road"],
                                                         ["Ours", "(ISCC)", "+25.0", "-25.0"]]
    # before the headline, the other two targets: every fraction (1% only here), no ablation row planned
    assert printed[-3:-1] == ["ISCC - scratch at every fraction run: 1% +6.2: target (ahead at every fraction) met",
                              "Ours (ISCC) - each ablation row at 1% (paired over the row's seeds): no ablation row: "
                              "target (the full method at least matches every ablation row) not checked"]
    assert (written["code"], written["machine"]["cpus"], written["settings"]["val_scans"]) == (CODE, 2, 3)
    # rerun: everything reused; from dirty code nothing is reused and no record is written
    assert le.main(argv) == 0
    assert "  12 of 12 jobs already finished by this code: reused" in capsys.readouterr().out.splitlines()
    assert json.loads(record.read_text())["runs"] == written["runs"]
    # --verify: runs made by other code are verified at that code, not here (nothing launched)
    other = CODE | {"code_hash": "e" * 64}
    monkeypatch.setattr(le, "code_identity", lambda: other)
    with pytest.raises(le.BenchError) as exc:
        le.main(argv + ["--verify", "scratch/1pct_seed3"])
    assert str(exc.value) == ("--verify scratch/1pct_seed3: made by code c0dec0dec0de (commit 439dd03), this is "
                              "code eeeeeeeeeeee (commit 439dd03); verify at the code that made it")
    assert not (out / "verify").exists()
    record.unlink()
    monkeypatch.setattr(le, "code_identity", lambda: CODE | {"code_hash": "d" * 64, "dirty": True})
    assert le.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("rerun ") for line in printed) == 12 - 1  # all but preprocessing
    assert f"record NOT written to {record}: the code differs from commit 439dd03 (dirty): commit it and rerun" \
        in printed
    assert not record.exists()


def test_the_readme_tables_are_generated_from_the_committed_records(tmp_path):
    page = tmp_path / "results.md"
    page.write_bytes(le.RESULTS_PAGE.read_bytes())
    le.render_readme_file(le.RECORD, page, le.STUDIES)
    assert page.read_bytes() == le.RESULTS_PAGE.read_bytes()


def test_a_protocol_continues_from_its_record_where_the_run_folders_are_gone(tmp_path, monkeypatch, capsys):
    """Interrupted at its 9th fine-tune, the benchmark has recorded those that finished (complete
    false); on another machine (no run folders) the same command runs only the rest (and the
    pretraining they need), and its record holds the same measurements as an uninterrupted one."""
    launched: list = []
    argv, record = fake_benchmark(tmp_path, monkeypatch, launched, stop_at="iscc/1pct_seed3")
    with pytest.raises(KeyboardInterrupt):
        le.main(argv)
    partial = json.loads(record.read_text())
    done = [f"{r['row']}/1pct_seed{r['seed']}" for r in partial["runs"]]
    assert partial["complete"] is False
    assert done == [name for name in launched if "/" in name][:len(done)] and len(done) >= 7
    shutil.rmtree(tmp_path / "out")  # another machine: only the repository's record is left
    launched.clear()
    argv, record = fake_benchmark(tmp_path, monkeypatch, launched)
    assert le.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert f"{len(done)} fine-tunes carried over from {record} (same settings, same code)" in printed
    assert printed[-4].split() == ["Ours", "(ISCC)", "+25.0", "-25.0"]  # the carried runs' IoU per class too
    every = [f"{row}/1pct_seed{seed}" for row in ("scratch", "iscc") for seed in range(5)]
    assert launched == ["pretrain_iscc"] + [name for name in every if name not in done]
    final = json.loads(record.read_text())
    assert final["complete"] is True and final["runs"][:len(done)] == partial["runs"]
    assert [(r["row"], r["seed"], r["miou"]) for r in final["runs"]] == \
        [(row, seed, 0.25 if row == "scratch" else 0.3125) for row in ("scratch", "iscc") for seed in range(5)]
    assert final["target"]["met"] is True
    assert all(r["cpu"] is None for r in final["runs"])  # fake_record's machine names no CPU
    # every fine-tune recorded: nothing runs, not even the pretraining
    shutil.rmtree(tmp_path / "out")
    launched.clear()
    assert le.main(argv) == 0 and launched == []
    # the record of other settings or other code stands for nothing
    monkeypatch.setattr(le, "code_identity", lambda: CODE | {"code_hash": "d" * 64})
    shutil.rmtree(tmp_path / "out")
    assert le.main(argv) == 0 and len(launched) == 11
    assert "scratch/1pct_seed0: the record's run is not carried over (made by code c0dec0dec0de (commit 439dd03))" \
        in capsys.readouterr().out.splitlines()
    jobs = le.plan(settings(tmp_path, fractions=[1.0], seeds=[0], finetune_steps=6))
    assert le.carry_recorded(jobs, record, settings(tmp_path, fractions=[1.0], seeds=[0], finetune_steps=6), 3) == \
        [f"{record}: not carried over, its settings differ (train_sequences, finetune_steps)"]
    assert not any(job.recorded is not None for job in jobs)


def test_runs_carried_over_from_another_kind_of_cpu_say_so(tmp_path, monkeypatch, capsys):
    """Interrupted on CPU A, finished on CPU B: each run records its CPU, the
    carry-over says the CPUs differ, and the page says that the record mixes them."""
    def on(cpu):
        monkeypatch.setattr(le, "machine_info", lambda device: fake_record()["machine"] | {"cpu": cpu})

    argv, record = fake_benchmark(tmp_path, monkeypatch, stop_at="iscc/1pct_seed3")
    on("A (family 6 model 1, avx512)")
    with pytest.raises(KeyboardInterrupt):
        le.main(argv)
    done = len(json.loads(record.read_text())["runs"])
    shutil.rmtree(tmp_path / "out")
    capsys.readouterr()
    argv, record = fake_benchmark(tmp_path, monkeypatch)
    on("B (family 6 model 2, avx2)")
    assert le.main(argv) == 0
    carried = [line for line in capsys.readouterr().out.splitlines() if "carried over" in line]
    assert carried == [f"{done} fine-tunes carried over from {record} (same settings, same code; made on "
                       "A (family 6 model 1, avx512), this is B (family 6 model 2, avx2): a run repeats bit for bit "
                       "only on its kind of CPU)"]
    final = json.loads(record.read_text())
    assert [r["cpu"][0] for r in final["runs"]] == ["A"] * done + ["B"] * (10 - done) and done >= 7
    assert ("The runs come from 2 kinds of CPU (A (family 6 model 1, avx512); B (family 6 model 2, avx2)): a run "
            "repeats bit for bit only on its kind, so a cell's seeds may mix machines.") in le.render_markdown(final)
    del final["runs"][0]["cpu"]  # a run made before runs recorded their CPU
    assert ("The runs come from 3 kinds of CPU (A (family 6 model 1, avx512); B (family 6 model 2, avx2); None; "
            "None: not recorded): a run repeats bit for bit only on its kind, so a cell's seeds may mix "
            "machines.") in le.render_markdown(final)
    assert not any("kinds of CPU" in line for line in le.render_markdown(fake_record()))


def test_a_partial_record_renders_its_measured_cells_and_says_so():
    record = fake_record()
    record["runs"] = [r for r in record["runs"] if r["fraction"] == 1.0]
    record["complete"] = False
    lines = le.render_markdown(record)
    total = sum(len(seeds) for by_fraction in record["settings"]["cells"].values() for seeds in by_fraction.values())
    assert (f"**In progress**: {len(record['runs'])} of {total} fine-tunes measured so far; the same command at the "
            "same commit continues it from this record.") in lines
    assert "**In progress**" not in "\n".join(le.render_markdown(fake_record()))


# ---------------------------------------------------------------------------- IoU per class
def with_classes(record: dict, per_class: dict[tuple[str, float, int], dict]) -> dict:
    """fake_record() with `iou_per_class` on the runs named in `per_class`."""
    for run in record["runs"]:
        key = (run["row"], run["fraction"], run["seed"])
        if key in per_class:
            run["iou_per_class"] = per_class[key]
    return record


# multiples of 1/16, so the means below are exact; sign absent from seed 1's ISCC run
PER_CLASS = {("scratch", 1.0, 0): {"car": 0.25, "road": 0.75, "sign": 0.5},
             ("scratch", 1.0, 1): {"car": 0.5, "road": 0.5, "sign": 0.25},
             ("iscc", 1.0, 0): {"car": 0.5, "road": 0.625, "sign": 0.5},
             ("iscc", 1.0, 1): {"car": 0.625, "road": 0.5, "sign": None}}


def test_class_differences_by_hand():
    """ISCC - scratch per class at 1%, by hand: car (0.5 - 0.25 + 0.625 - 0.5) / 2 = +18.75 points,
    road (-0.125 + 0) / 2 = -6.25; sign absent from one run: None. occ-only(2) kept no IoU per
    class: left out, as is a row whose scratch pair lacks them."""
    runs = with_classes(fake_record(), PER_CLASS)["runs"]
    cells_ = le.cells_from_json(fake_record()["settings"]["cells"])
    classes, differences = le.class_differences(runs, cells_, 1.0)
    assert classes == ["car", "road", "sign"]
    assert differences == {"iscc": {"car": 18.75, "road": -6.25, "sign": None}}
    lacking = [r for r in runs if (r["row"], r["seed"]) != ("scratch", 1)]
    assert le.class_differences(lacking, cells_, 1.0)[1] == {}
    assert le.class_differences(fake_record()["runs"], cells_, 1.0) == ([], {})
    assert [le.format_class_delta(v) for v in (18.75, -6.25, -0.04, 0.0, None)] == ["+18.8", "-6.2", "+0.0", "+0.0",
                                                                                       "-"]


def test_the_results_page_and_the_console_show_iou_per_class():
    record = with_classes(fake_record(), PER_CLASS)
    lines = le.render_markdown(record)
    block = ["IoU per class at 1%: each row's difference to No Pre-training in points of IoU (%), the mean over "
             "the row's seeds (same labelled scans):", "",
             "| method | car | road | sign |", "|---|---|---|---|",
             "| Ours (ISCC) | +18.8 | -6.2 | - |"]
    at = lines.index(block[0])
    assert lines[at:at + len(block)] == block
    assert lines[:at - 1] == EXPECTED_MARKDOWN.split("\n")[:at - 1]  # the rest as before
    assert not any(line.startswith("IoU per class") for line in le.render_markdown(fake_record()))
    summary = le.summarize({(r["row"], r["fraction"], r["seed"]): r["miou"] for r in record["runs"]},
                           le.cells_from_json(record["settings"]["cells"]))
    printed = le.format_table(summary, le.cells_from_json(record["settings"]["cells"]), record["runs"])
    assert [line.split() for line in printed[-3:]] == [
        ["per", "class", "at", "1%", "(points", "of", "IoU", "%,", "the", "mean", "difference", "to", "No",
         "Pre-training", "over", "the", "row's", "seeds):"],
        ["method", "car", "road", "sign"], ["Ours", "(ISCC)", "+18.8", "-6.2", "-"]]


def test_the_studies_page_shows_iscc_minus_scratch_per_class():
    """The study kept IoU per class, the recorded protocol did not: its row is '-'."""
    study = with_classes(fake_study(), PER_CLASS)
    lines = le.render_studies([("record.json", fake_record()), ("study.json", study)])
    assert lines == studies_markdown(Path("record.json"), Path("study.json")) + [
        "", "| pretraining | car | road | sign | record |", "|---|---|---|---|---|",
        "| 500 steps | - | - | - | record.json |",
        "| 1000 steps with data.train.mask_ratio=0.5; groups with ground_patches.size=2.0 | +18.8 | -6.2 | - | "
        "study.json |",
        "", "ISCC - scratch per class at 1%, in points of IoU (%), the mean over the same seeds; -: not kept (a "
        "record written before the runs' IoU per class was)."]
