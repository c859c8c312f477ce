"""benchmarks/label_efficiency.py without training: the table and the target verdict on hand-made
mIoUs, the job plan (what waits for the encoder, identical settings for scratch and pretrained),
the runner with a fake subprocess (order, parallelism, reuse, resume, failures) and the check
that the rows of a (fraction, seed) trained on the same scans."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import label_efficiency as le
from tests.conftest import ROOT


def settings(tmp_path: Path, **kw) -> le.Settings:
    base = dict(data=tmp_path / "data", out=tmp_path / "out", train_sequences=["00", "01"], val_sequence="02",
                label_config=le.SYNTHETIC_LABELS, fractions=[1.0, 2.0, 5.0, 10.0], seeds=[0, 1],
                rows=["scratch", "iscc"], pretrain_steps=7, finetune_steps=5, device="cpu")
    base.update(kw)
    return le.Settings(**base)


def groups_done(data: Path, sequences) -> None:
    for seq in sequences:
        manifest = data / "sequences" / seq / "groups" / "manifest.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"status": "complete"}))


# ------------------------------------------------------------------------------- table and verdict
def hand_made():
    # exactly representable values, so the verdict's comparisons are exact
    return {("scratch", 1.0, 0): 0.25, ("scratch", 1.0, 1): 0.5, ("iscc", 1.0, 0): 0.3125, ("iscc", 1.0, 1): 0.5,
            ("scratch", 2.0, 0): 0.5, ("scratch", 2.0, 1): 0.5, ("iscc", 2.0, 0): 0.625}  # iscc 2%: seed 1 missing


def test_summary_means_deltas_and_target_met_at_the_threshold():
    summary = le.summarize(hand_made(), ["scratch", "iscc"], [1.0, 2.0], [0, 1])
    scratch, iscc = summary["table"]["scratch"]["1"], summary["table"]["iscc"]["1"]
    assert scratch["mean"] == 37.5 and scratch["delta"] is None
    assert iscc["mean"] == 40.625 and iscc["seed_deltas"] == {"0": 6.25, "1": 0.0} and iscc["delta"] == 3.125
    # a cell missing a seed has no mean and no delta (never a mean over fewer seeds)
    assert summary["table"]["iscc"]["2"]["mean"] is None and summary["table"]["iscc"]["2"]["delta"] is None
    target = summary["target"]
    assert target == {"fraction": 1.0, "threshold": 3.0, "seeds": 2, "mean_delta": 3.125, "worst_delta": 0.0,
                      "worst_seed": 1, "met": True}  # a seed equal to scratch is not worse
    assert le.verdict(target) == ("1% labels: ISCC - scratch = +3.12 mIoU (mean of 2 seeds), worst seed +0.00 "
                                  "(seed 1): target met (>= +3.0 mean, no seed below scratch)")
    lines = le.format_table(summary, ["scratch", "iscc"], [1.0, 2.0], [0, 1])
    assert lines[0].split() == ["method", "1%", "2%"]
    assert lines[2].split() == ["No", "Pre-training", "37.5", "50.0"]
    assert lines[3].split() == ["Ours", "(ISCC)", "40.6", "(+3.1)", "-"]
    assert [l.split()[3:] for l in lines if l.split()[:3] == ["Ours", "(ISCC)", "1"]] == [["50.0", "(+0.0)", "-"]]


def test_target_not_met_names_every_reason():
    miou = hand_made() | {("iscc", 1.0, 1): 0.4375}  # seed 1: 6.25 below scratch, mean 0
    target = le.summarize(miou, ["scratch", "iscc"], [1.0], [0, 1])["target"]
    assert (target["mean_delta"], target["worst_delta"], target["worst_seed"], target["met"]) == (0.0, -6.25, 1, False)
    assert le.verdict(target).endswith("target NOT met (mean below +3.0, seed 1 below scratch)")
    # mean high enough, one seed worse: still not met
    miou = hand_made() | {("iscc", 1.0, 0): 0.5, ("iscc", 1.0, 1): 0.46875}
    target = le.summarize(miou, ["scratch", "iscc"], [1.0], [0, 1])["target"]
    assert target["mean_delta"] == 10.9375 and target["worst_delta"] == -3.125 and target["met"] is False
    # a missing seed at the target fraction: not checked rather than judged on one seed
    del miou[("iscc", 1.0, 1)]
    target = le.summarize(miou, ["scratch", "iscc"], [1.0], [0, 1])["target"]
    assert target["met"] is None and "target not checked" in le.verdict(target)


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
    # smallest fraction first, scratch before ISCC in each (fraction, seed): the runner starts the
    # ready jobs in this order, so scratch runs fill the free core while the encoder trains
    order = [(j.fraction, j.seed, j.row) for j in jobs if j.kind == "finetune"]
    assert order == [(f, seed, row) for f in sorted(s.fractions) for seed in s.seeds for row in ("scratch", "iscc")]
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


def test_plan_ablation_rows_and_finished_groups(tmp_path):
    s = settings(tmp_path, rows=["scratch", "iscc", "occ8", "full200"], fractions=[1.0], seeds=[0])
    groups_done(s.data, s.train_sequences)
    jobs = le.plan(s)
    assert jobs[0].finished()  # the groups exist: preprocessing is not rerun
    pretrain = {j.row: j for j in jobs if j.kind == "pretrain"}
    assert list(pretrain) == ["iscc", "occ8", "full200"]
    assert "model.occupancy_bins=8" in pretrain["occ8"].argv and "model.num_prototypes=200" in pretrain["full200"].argv
    assert [j.after for j in jobs if j.kind == "finetune"] == [[], ["pretrain_iscc"], ["pretrain_occ8"],
                                                              ["pretrain_full200"]]


def test_ablation_rows_are_the_base_configs_header():
    header = (ROOT / "configs" / "_base_" / "models" / "minkunet14a_iscc.yaml").read_text()
    lines = {m.group(1): m.group(2).split() for m in re.finditer(r"^#   (\S+)\s+(model\.[^(\n]*?)\s*(?:\(|$)", header, re.M)}
    assert lines["occ-only(K)"] == ["model.use_local=false", "model.use_global=false", "model.occupancy_bins=K"]
    for row in le.ABLATIONS:
        name, overrides = le.ROWS[row]
        k = re.search(r"\((\d+)\)", name)
        key = re.sub(r"\(\d+\)", "(K)" if row.startswith("occ") else "(M)", name)
        expected = [o.replace("=K", f"={k.group(1)}").replace("=M", f"={k.group(1)}") if k else o for o in lines[key]]
        assert overrides == expected, row


# ---------------------------------------------------------------------------------------- the runner
class FakeProcess:
    """Finishes on its second poll, writing what the real tool writes (or nothing, if failing)."""

    running: set = set()
    peak = 0

    def __init__(self, job, rc=0):
        self.job, self.rc, self.polls = job, rc, 0
        FakeProcess.running.add(job.name)
        FakeProcess.peak = max(FakeProcess.peak, len(FakeProcess.running))

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
    assert le.read_results(jobs, again, 5) == {("scratch", 1.0, 0): 0.25, ("scratch", 2.0, 0): 0.5,
                                               ("iscc", 1.0, 0): 0.5, ("iscc", 2.0, 0): 0.5}
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
    for job, text in zip(jobs, ["000000\n", "000001\n"]):
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
    import yaml

    (job.run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    le.check_reused(job)
    config["train"]["max_steps"] = 300
    (job.run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(le.BenchError, match="train.max_steps is 300, the benchmark asks 5"):
        le.check_reused(job)


def test_default_budget_fits_90_minutes_on_2_cores(tmp_path):
    s = settings(tmp_path, pretrain_steps=le.DEFAULT_PRETRAIN_STEPS, finetune_steps=le.DEFAULT_FINETUNE_STEPS)
    groups_done(s.data, s.train_sequences)
    jobs = le.plan(s)
    assert sum(j.kind == "finetune" for j in jobs) == 16 and sum(j.kind == "pretrain" for j in jobs) == 1
    assert le.estimate(jobs, 2, s, slow=True) < 90 * 60
    # the plan's order matters: scratch runs fill the second core while the pretraining runs
    typical = le.estimate(jobs, 2, s)
    pretrain = le.PRETRAIN_FIXED_S + s.pretrain_steps * le.PRETRAIN_STEP_S
    finetune = le.FINETUNE_FIXED_S + s.finetune_steps * le.FINETUNE_STEP_S
    assert typical == pytest.approx(max(pretrain, 8 * finetune) + 4 * finetune)
