"""Bad inputs and hostile conditions: one `error: FILE: problem` line (exit 2) before anything is
written, or a run that keeps what it had. One test per case found by trying voxseg as a new user."""

from __future__ import annotations

import errno
import shutil

import numpy as np
import pytest
import torch
import yaml

from tests.helpers import FINETUNE_CONFIG, PRETRAIN_CONFIG, ROOT, cli, finetune_overrides
from voxseg.data import semantic_kitti as sk
from voxseg.engine import checkpoint, finetune, pretrain
from voxseg.errors import ConfigError, DataFormatError, VoxsegError


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    return root


def resolve(root, out, **extra):
    return finetune.resolve(str(FINETUNE_CONFIG), finetune_overrides(root, out, **extra))


def scan(root, sequence, frame):
    return sk.scan_path(root, sequence, f"{frame:06d}")


def one_error_line(done, *fragments):
    """Exit 2 and one `error:` line, the last one (a progress bar may come before it)."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert sum(line.startswith("error") for line in lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


# ------------------------------------------------------------------------------ scans
@pytest.mark.parametrize("sequence", ["00", "01"])  # a training scan, a validation scan
def test_truncated_scan_is_found_before_training(sequence, dataset_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = scan(dataset_copy, sequence, 2)
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(DataFormatError, match=f"^{bad}: .* not a multiple of 16"):
        finetune.run(resolve(dataset_copy, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_empty_scan_is_named(dataset_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = scan(dataset_copy, "00", 4)
    bad.write_bytes(b"")
    sk.label_path(dataset_copy, "00", "000004").write_bytes(b"")
    with pytest.raises(DataFormatError, match=f"^{bad}: empty scan"):
        finetune.run(resolve(dataset_copy, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_nan_intensity_is_named(dataset_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = scan(dataset_copy, "00", 1)
    points = sk.read_scan(bad)
    points[7, 3] = np.nan
    sk.write_scan(bad, points)
    done = cli("tools/finetune.py", "--config", str(FINETUNE_CONFIG),
               *finetune_overrides(dataset_copy, tmp_path / "run"))
    one_error_line(done, f"{bad}: 1 of {len(points)} points have NaN or infinite intensities")
    assert not (tmp_path / "run").exists()


def test_label_count_mismatch_is_named(dataset_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    label = sk.label_path(dataset_copy, "01", "000000")
    label.write_bytes(label.read_bytes()[:-8])
    with pytest.raises(DataFormatError, match=f"^{label}: "):
        finetune.run(resolve(dataset_copy, tmp_path / "run"))


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("model.backbone.voxel_size=0", "model.backbone.voxel_size: must be > 0, got 0"),
    ("train.lr=.nan", "train.lr: expected a finite number > 0, got nan"),
    ("train.max_steps=-1", "train.max_steps: must be >= 1, got -1"),
])
def test_bad_numbers_are_config_errors(override, message, tmp_path):
    with pytest.raises(ConfigError) as info:
        finetune.resolve(str(FINETUNE_CONFIG), [override])
    assert str(info.value) == f"command line: {message}"


def test_bad_number_on_the_command_line_is_one_line(tmp_path):
    one_error_line(cli("tools/finetune.py", "--config", str(FINETUNE_CONFIG), "train.batch_size=0"),
                   "command line: train.batch_size: must be >= 1, got 0")


AUGMENT = "data.train.transforms"  # synthetic_minkunet14a: RangeCrop, RandomRotateZ, RandomFlip, RandomScale


FINETUNE_REFUSALS = [
    ("model.loss_weights.ce=-1", "model.loss_weights.ce: must be >= 0, got -1"),
    ("model.loss_weights.ce=.nan", "model.loss_weights.ce: expected a finite number >= 0, got nan"),
    ("model.loss_weights.dice=1", "model.loss_weights.dice: names no loss term; terms: ce"),
    ("model.losses.ce.head=semantc", "model.losses.ce.head: 'semantc' names no head; heads: semantic"),
    ("model.heads.second={type: SemanticHead, num_classes: 12}",
     "model.heads.second: predicts 'segment' as heads.semantic does; a model has one head per prediction"),
    (f"{AUGMENT}.0.max_range=.nan", f"{AUGMENT}.0.max_range: expected a finite number >= 5.0, got nan"),
    (f"{AUGMENT}.0.max_range=-40", f"{AUGMENT}.0.max_range: must be >= 5.0, got -40"),
    (f"{AUGMENT}.0.max_range=1", f"{AUGMENT}.0.max_range: must be >= 5.0, got 1"),
    (f"{AUGMENT}.1.max_deg=.nan", f"{AUGMENT}.1.max_deg: expected a finite number >= 0, got nan"),
    (f"{AUGMENT}.3.low=1.2", f"{AUGMENT}.3.low: must be <= high (1.05), got 1.2"),
    (f"{AUGMENT}.3.low=-0.5", f"{AUGMENT}.3.low: must be > 0, got -0.5"),
    (f"{AUGMENT}.2={{type: RandomJitter, sigma: -0.01}}", f"{AUGMENT}.2.sigma: must be >= 0, got -0.01"),
    ("train.seed=-1", "train.seed: must be in [0, 4294967296), got -1"),
]
PRETRAIN_REFUSALS = [
    ("model.loss_weights.global=-1", "model.loss_weights.global: must be >= 0, got -1"),
    ("model.loss_weights.globl=1",
     "model.loss_weights.globl: names no ISCC term; terms: local, global, occupancy, intensity"),
    (("model.use_local=false", "model.use_global=false", "model.use_occupancy=false"),
     "model.use_local: ISCC needs at least one of use_local, use_global, use_occupancy"),
    ("train.seed=-1", "train.seed: must be in [0, 4294967296), got -1"),
]


@pytest.mark.parametrize("task, config, override, message",
                         [("finetune", FINETUNE_CONFIG, *case) for case in FINETUNE_REFUSALS]
                         + [("pretrain", PRETRAIN_CONFIG, *case) for case in PRETRAIN_REFUSALS])
def test_configs_that_cannot_mean_what_they_say_are_config_errors(task, config, override, message):
    resolve = {"finetune": finetune.resolve, "pretrain": pretrain.resolve}[task]
    with pytest.raises(ConfigError) as info:
        resolve(str(config), [override] if isinstance(override, str) else list(override))
    assert str(info.value) == f"command line: {message}"


def test_a_negative_loss_weight_in_a_file_stops_finetuning_before_it_writes(tmp_path):
    config = tmp_path / "negative.yaml"
    config.write_text(f"_base_: {FINETUNE_CONFIG}\nmodel:\n  loss_weights: {{ce: -1}}\n")
    done = cli("tools/finetune.py", "--config", str(config), f"output_dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {config.resolve()}: model.loss_weights.ce: must be >= 0, got -1"
    assert not (tmp_path / "run").exists()


def test_a_negative_iscc_loss_weight_stops_pretraining_before_it_writes(tmp_path):
    done = cli("tools/pretrain.py", "--config", str(PRETRAIN_CONFIG), "model.loss_weights.global=-1",
               f"output_dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: command line: model.loss_weights.global: must be >= 0, got -1"
    assert not (tmp_path / "run").exists()


def test_a_duplicated_train_block_stops_the_tool_naming_both_lines(tmp_path):
    config = tmp_path / "twice.yaml"
    config.write_text(f"_base_: {FINETUNE_CONFIG}\ntrain:\n  lr: 0.0123\noutput_dir: {tmp_path / 'run'}\n"
                      "train:\n  max_steps: 5\n")
    done = cli("tools/finetune.py", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {config.resolve()}: line 5: duplicate key 'train' (first at line 2)"
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------- output folder
def test_output_folder_that_is_a_file(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    target = tmp_path / "run"
    target.write_text("not a folder")
    with pytest.raises(VoxsegError, match=f"^{target}: output_dir is a file"):
        finetune.run(resolve(tiny_dataset, target))
    assert target.read_text() == "not a folder"


def test_output_folder_that_cannot_be_created(tiny_dataset, monkeypatch):
    monkeypatch.chdir(ROOT)
    target = "/proc/voxseg-cannot-be-here/run"  # not creatable, even as root
    with pytest.raises(VoxsegError, match=f"^{target}: cannot write the output folder"):
        finetune.run(resolve(tiny_dataset, target))


def test_missing_output_folder_is_created(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    target = tmp_path / "a" / "b" / "run"
    finetune.run(resolve(tiny_dataset, target, **{"train.max_steps": 1, "train.val_every": 0}))
    assert checkpoint.load(target / "checkpoints" / "last.pt")["step"] == 1


def test_full_disk_while_saving_a_checkpoint_keeps_the_last_one(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(VoxsegError, match=f"^{out / 'checkpoints' / 'last.pt'}: could not write "
                                          r"\(No space left on device\); the previous file is kept"):
        finetune.run(resolve(tiny_dataset, out, **{"train.val_every": 0}))
    assert checkpoint.load(out / "checkpoints" / "last.pt")["step"] == 2
    assert not list((out / "checkpoints").glob(".*.tmp"))


# ------------------------------------------------------------------------------- resume
@pytest.fixture
def finished(tiny_dataset, tmp_path, monkeypatch):
    """A 2-step run to resume."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    finetune.run(resolve(tiny_dataset, out, **{"train.max_steps": 2, "train.val_every": 0}))
    return out


@pytest.mark.parametrize("change, keys", [
    ({"model.backbone.voxel_size": 0.5}, "model.backbone.voxel_size"),
    ({"model.backbone.type": "MinkUNet18A"}, "model.backbone.type"),
])
def test_resume_refuses_another_model(change, keys, finished, tiny_dataset):
    before = (finished / "config.yaml").read_bytes()
    cfg = resolve(tiny_dataset, finished, **{"train.max_steps": 4, "train.val_every": 0, **change})
    with pytest.raises(VoxsegError, match=f"the config changes the model \\({keys}"):
        finetune.run(cfg, resume=True, allow_config_change=True)
    assert (finished / "config.yaml").read_bytes() == before
    assert checkpoint.load(finished / "checkpoints" / "last.pt")["step"] == 2


def test_resume_with_a_changed_config_needs_consent(finished, tiny_dataset):
    before = (finished / "config.yaml").read_bytes()
    cfg = resolve(tiny_dataset, finished, **{"train.max_steps": 3, "train.val_every": 0, "train.lr": 0.5,
                                             "train.num_workers": 1})
    with pytest.raises(VoxsegError,
                       match=r"differs from the run's in train.lr, train.max_steps; pass --allow-config-change"):
        finetune.run(cfg, resume=True)
    assert (finished / "config.yaml").read_bytes() == before
    finetune.run(cfg, resume=True, allow_config_change=True)
    assert checkpoint.load(finished / "checkpoints" / "last.pt")["step"] == 3
    assert yaml.safe_load((finished / "config.yaml").read_text())["train"]["lr"] == 0.5


def saved_by_older_code(run, drop):
    """Rewrite `run`'s last.pt as code without the option `drop` (dotted) would have saved it."""
    path = run / "checkpoints" / "last.pt"
    data = torch.load(path, weights_only=False)
    *parents, key = drop.split(".")
    section = data["config"]
    for name in parents:
        section = section[name]
    del section[key]
    torch.save(data, path)


def test_resume_of_a_run_saved_before_an_option_existed_reads_its_default(finished, tiny_dataset):
    saved_by_older_code(finished, "model.heads.semantic.dropout")
    saved_by_older_code(finished, "train.min_lr_ratio")
    finetune.run(resolve(tiny_dataset, finished, **{"train.max_steps": 3, "train.val_every": 0}), resume=True,
                 allow_config_change=True)
    assert checkpoint.load(finished / "checkpoints" / "last.pt")["step"] == 3


def test_resume_of_a_run_saved_before_an_option_existed_refuses_another_value(finished, tiny_dataset):
    saved_by_older_code(finished, "model.heads.semantic.dropout")
    cfg = resolve(tiny_dataset, finished, **{"train.max_steps": 3, "train.val_every": 0,
                                             "model.heads.semantic.dropout": 0.25})
    with pytest.raises(VoxsegError, match=r"the config changes the model \(model.heads.semantic.dropout\)"):
        finetune.run(cfg, resume=True, allow_config_change=True)
    assert checkpoint.load(finished / "checkpoints" / "last.pt")["step"] == 2


def test_resume_of_a_run_with_an_option_this_code_no_longer_has(finished, tiny_dataset):
    path = finished / "checkpoints" / "last.pt"
    data = torch.load(path, weights_only=False)
    data["config"]["train"]["retired_option"] = 1
    torch.save(data, path)
    cfg = resolve(tiny_dataset, finished, **{"train.max_steps": 3, "train.val_every": 0})
    with pytest.raises(VoxsegError, match=r"differs from the run's in train.max_steps, train.retired_option; pass "
                                          r"--allow-config-change"):
        finetune.run(cfg, resume=True)
    finetune.run(cfg, resume=True, allow_config_change=True)
    assert checkpoint.load(path)["step"] == 3
    data = torch.load(path, weights_only=False)
    data["config"]["model"]["heads"]["semantic"]["retired_option"] = 1
    torch.save(data, path)
    with pytest.raises(VoxsegError, match=r"the config changes the model \(model.heads.semantic.retired_option\)"):
        finetune.run(resolve(tiny_dataset, finished, **{"train.max_steps": 4, "train.val_every": 0}), resume=True,
                     allow_config_change=True)


def test_resume_without_a_run(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(VoxsegError, match="checkpoints/last.pt: no checkpoint to resume"):
        finetune.run(resolve(tiny_dataset, tmp_path / "none"), resume=True)
    assert not (tmp_path / "none").exists()


# -------------------------------------------------------------------------------- infer
def infer(checkpoint_path, root, out, *extra):
    return cli("tools/infer.py", "--checkpoint", str(checkpoint_path), "--dataset", str(root), "--sequences", "01",
               "--out", str(out), *extra)


def test_infer_refuses_a_label_config_of_another_size(finished, tiny_dataset, tmp_path):
    labels = yaml.safe_load((ROOT / "configs/labels/synthetic.yaml").read_text())
    labels["learning_ignore"][labels["learning_map"][81]] = True  # traffic-sign ignored: 11 classes
    other = tmp_path / "labels.yaml"
    other.write_text(yaml.safe_dump(labels))
    done = infer(finished / "checkpoints" / "last.pt", tiny_dataset, tmp_path / "pred", "--label-config", str(other))
    one_error_line(done, f"{other}: defines 11 evaluated classes but", "predicts 12")
    assert not (tmp_path / "pred").exists()


def test_infer_failure_part_way_keeps_earlier_predictions(finished, dataset_copy, tmp_path):
    pred = tmp_path / "pred"
    done = infer(finished / "checkpoints" / "last.pt", dataset_copy, pred)
    assert done.returncode == 0, done.stderr
    folder = pred / "sequences" / "01" / "predictions"
    old = {f.name: f.read_bytes() for f in folder.glob("*.label")}
    assert sorted(old) == ["000000.label", "000001.label", "000002.label"]

    bad = scan(dataset_copy, "01", 2)  # the last scan: two new files would be written before it
    points = sk.read_scan(bad)
    points[0, 3] = np.inf
    sk.write_scan(bad, points)
    shutil.copy(scan(dataset_copy, "00", 0), scan(dataset_copy, "01", 0))  # new content for scan 0
    shutil.copy(sk.label_path(dataset_copy, "00", "000000"), sk.label_path(dataset_copy, "01", "000000"))
    done = infer(finished / "checkpoints" / "last.pt", dataset_copy, pred)
    one_error_line(done, f"{bad}: 1 of {len(points)} points have NaN or infinite intensities")
    assert {f.name: f.read_bytes() for f in folder.glob("*.label")} == old
    assert sorted(p.name for p in pred.iterdir()) == ["sequences"]  # no staging folder left


def test_infer_writes_an_empty_prediction_for_an_empty_scan(finished, dataset_copy, tmp_path):
    scan(dataset_copy, "01", 1).write_bytes(b"")
    pred = tmp_path / "pred"
    done = infer(finished / "checkpoints" / "last.pt", dataset_copy, pred)
    assert done.returncode == 0, done.stderr
    folder = pred / "sequences" / "01" / "predictions"
    assert (folder / "000001.label").read_bytes() == b""
    assert len(sk.read_label(folder / "000002.label")[0]) == len(sk.read_scan(scan(dataset_copy, "01", 2)))
