"""The preprocessing job end to end: outputs, linked ids, resume, shards, bad inputs, the CLI, a
read-only dataset with estimated poses."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from preprocessing import pipeline
from tests.helpers import ROOT, read_only, snapshot
from voxseg.data import semantic_kitti as sk
from voxseg.errors import DataFormatError, VoxsegError

CONFIG = ROOT / "configs" / "preprocess" / "default.yaml"
SMALL = ["stacking.window=2", "stacking.stride=1"]  # seq 00 (6 scans): 5 windows, 2 chunks


def cfg(*extra):
    return pipeline.resolve(CONFIG, [*SMALL, *extra])


def outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.group"))}


@pytest.fixture(scope="module")
def reference_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("pp_ref")
    summary = pipeline.run(tiny_dataset, ["00", "01"], cfg(), out=out, progress=False)
    return out, summary


def test_group_files_align_with_scans(tiny_dataset, reference_run):
    out, summary = reference_run
    assert summary.sequences["00"]["status"] == "complete" and summary.sequences["00"]["written"] == 6
    for seq, frames in (("00", 6), ("01", 3)):
        for i in range(frames):
            scan = sk.read_scan(sk.scan_path(tiny_dataset, seq, f"{i:06d}"))
            semantic, _ = sk.read_label(sk.label_path(tiny_dataset, seq, f"{i:06d}"), len(scan))
            groups = pipeline.read_groups(out / "sequences" / seq / "groups" / f"{i:06d}.group", len(scan))
            assert groups.min() >= -1 and (groups >= 0).mean() > 0.2
            assert np.mean(groups[semantic == 40] == -1) > 0.95  # road is ground
    manifest = (out / "sequences" / "00" / "groups" / "manifest.json").read_text()
    assert '"status": "complete"' in manifest and '"hdbscan"' in manifest and '"window": 2' in manifest


def test_parked_cars_keep_their_id_across_windows(tiny_dataset, reference_run):
    """Scans 0..5 have different home windows; a parked car's main group id is the same in all."""
    out, _ = reference_run
    per_scan = []
    for i in range(6):
        scan = sk.read_scan(sk.scan_path(tiny_dataset, "00", f"{i:06d}"))
        semantic, instance = sk.read_label(sk.label_path(tiny_dataset, "00", f"{i:06d}"), len(scan))
        groups = pipeline.read_groups(out / "sequences" / "00" / "groups" / f"{i:06d}.group")
        per_scan.append((semantic, instance, groups))
    cars = set.intersection(*[set(ins[(sem == 10) & (ins > 0)]) for sem, ins, _ in per_scan])
    stable = 0
    for car in cars:
        ids = []
        for _, ins, groups in per_scan:
            g = groups[ins == car]
            ids.append(np.bincount(g[g >= 0]).argmax() if (g >= 0).sum() > 20 else None)
        ids = [i for i in ids if i is not None]
        if len(ids) == 6:
            stable += len(set(ids)) == 1
    assert stable >= 2


def test_rerun_skips_and_redoes_missing_or_truncated(tiny_dataset, reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    groups = out / "sequences" / "00" / "groups"
    (groups / "000002.group").unlink()
    (groups / "000004.group").write_bytes((groups / "000004.group").read_bytes()[:100])
    before = (groups / "000000.group").stat().st_mtime_ns
    summary = pipeline.run(tiny_dataset, ["00", "01"], cfg(), out=out, progress=False)
    assert summary.sequences["00"]["written"] == 2 and summary.sequences["01"]["status"] == "already complete"
    assert (groups / "000000.group").stat().st_mtime_ns == before
    assert outputs(out) == outputs(ref)


def test_resume_after_interruption(tiny_dataset, reference_run, tmp_path, monkeypatch):
    ref, _ = reference_run
    out = tmp_path / "out"
    real, calls = pipeline._run_window, []

    def interrupted(task):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(task)
        return real(task)

    monkeypatch.setattr(pipeline, "_run_window", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(tiny_dataset, ["00", "01"], cfg(), out=out, progress=False)
    assert not outputs(out)  # nothing linked yet, 3 windows cached
    assert len(list((out / "sequences" / "00" / "groups" / ".windows").glob("*.npz"))) == 3
    monkeypatch.setattr(pipeline, "_run_window", real)
    summary = pipeline.run(tiny_dataset, ["00", "01"], cfg(), out=out, progress=False)
    assert summary.sequences["00"]["points"] < summary.sequences["00"]["scans"] * 1e6  # redid 2 windows only
    assert outputs(out) == outputs(ref)


def test_two_shards_make_the_files_of_one_run(tiny_dataset, reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "out"
    first = pipeline.run(tiny_dataset, ["00", "01"], cfg(), out=out, shard=(0, 2), progress=False)
    assert first.sequences["00"]["status"].startswith("waiting")  # windows 4.. belong to shard 1
    second = pipeline.run(tiny_dataset, ["00", "01"], cfg(), out=out, shard=(1, 2), progress=False)
    assert second.sequences["00"]["status"] == "complete"
    assert outputs(out) == outputs(ref)


@pytest.mark.slow
def test_workers_give_the_same_files(tiny_dataset, reference_run, tmp_path):
    ref, _ = reference_run
    pipeline.run(tiny_dataset, ["00", "01"], cfg(), out=tmp_path, workers=2, progress=False)
    assert outputs(tmp_path) == outputs(ref)


def test_other_parameters_refuse_to_mix(tiny_dataset, reference_run, tmp_path):
    ref, _ = reference_run
    shutil.copytree(ref, tmp_path / "out")
    with pytest.raises(VoxsegError, match="manifest.json: these groups were made with other parameters"):
        pipeline.run(tiny_dataset, ["01"], cfg("grouping.voxel_size=0.3"), out=tmp_path / "out", progress=False)


def test_outputs_made_before_ground_patches_existed_still_count(tiny_dataset, reference_run, tmp_path):
    """A manifest written before the ground_patches section existed reads its default (no
    patches): the rerun finds the sequence complete; asking for patches is a change."""
    ref, _ = reference_run
    shutil.copytree(ref, tmp_path / "out")
    manifest_path = tmp_path / "out" / "sequences" / "01" / "groups" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["config"]["ground_patches"]
    manifest_path.write_text(json.dumps(manifest))
    summary = pipeline.run(tiny_dataset, ["01"], cfg(), out=tmp_path / "out", progress=False)
    assert summary.sequences["01"]["status"] == "already complete"
    with pytest.raises(VoxsegError, match="manifest.json: these groups were made with other parameters"):
        pipeline.run(tiny_dataset, ["01"], cfg("ground_patches.size=2.0"), out=tmp_path / "out", progress=False)


def test_ground_patches_group_the_ground_by_cell(tiny_dataset, tmp_path):
    """With ground_patches.size, road points are grouped by bird's-eye-view cell: each patch lies
    in one size x size cell of the window's frame and holds >= min_points of its stacked points;
    the object groups are those of a run without patches, and patch ids follow theirs."""
    plain = pipeline.run(tiny_dataset, ["01"], cfg(), out=tmp_path / "plain", progress=False)
    patched = pipeline.run(tiny_dataset, ["01"], cfg("ground_patches.size=2.0"), out=tmp_path / "patched",
                           progress=False)
    assert plain.sequences["01"]["status"] == patched.sequences["01"]["status"] == "complete"
    seq = sk.sequence_dir(tiny_dataset, "01")
    poses = pipeline.stacking.lidar_poses(seq / "calib.txt", seq / "poses.txt")
    from voxseg.data.groups import read_window_ids

    window = "00000.npz"  # scans 000000 and 000001 (window 2, stride 1), stacked in scan 0's frame
    ids, points = [], []
    for k, frame in enumerate(("000000", "000001")):
        base = read_window_ids(tmp_path / "plain" / "sequences" / "01" / "groups" / "windows" / window, frame)
        mine = read_window_ids(tmp_path / "patched" / "sequences" / "01" / "groups" / "windows" / window, frame)
        grouped = base >= 0
        assert np.array_equal(mine[grouped], base[grouped])  # the object groups are untouched
        assert (mine[~grouped] == -1).mean() < 0.5  # most ground points now have a patch
        scan = sk.read_scan(seq / "velodyne" / f"{frame}.bin")
        points.append(pipeline.stacking.transform(scan, np.linalg.inv(poses[0]) @ poses[k])[~grouped])
        ids.append(mine[~grouped])
        semantic, _ = sk.read_label(seq / "labels" / f"{frame}.label", len(scan))
        assert (mine[semantic == 40] >= 0).mean() > 0.9  # road
    ids, points = np.concatenate(ids), np.concatenate(points)
    patches = np.unique(ids[ids >= 0])
    first_patch = max(read_window_ids(tmp_path / "plain" / "sequences" / "01" / "groups" / "windows" / window,
                                      f).max() for f in ("000000", "000001")) + 1
    assert patches.min() == first_patch and len(patches) > 10
    for patch in patches:
        cells = np.unique(np.floor(points[ids == patch, :2] / 2.0), axis=0)
        assert len(cells) == 1 and (ids == patch).sum() >= 20


def test_ground_patches_number_cells_by_size():
    """Hand-computed: cells of 1 m, min 2 points; the 3-point cell first, single points stay -1."""
    points = np.array([[0.1, 0.1, 0], [0.9, 0.2, 0], [0.5, 0.5, 0],  # cell (0, 0): 3 points
                       [1.5, 0.1, 0], [1.2, 0.9, 0],  # cell (1, 0): 2 points
                       [-0.5, 0.5, 0]])  # cell (-1, 0): 1 point
    assert pipeline.ground_patches(points, 1.0, 2).tolist() == [0, 0, 0, 1, 1, -1]


# ------------------------------------------------------------------------------ bad input
@pytest.fixture
def copy(tiny_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset / "sequences" / "01", root / "sequences" / "01")
    return root


def break_calib(seq):
    (seq / "calib.txt").unlink()


def break_poses(seq):
    lines = (seq / "poses.txt").read_text().splitlines()
    (seq / "poses.txt").write_text("\n".join(lines[:-1]) + "\n")


def truncate_scan(seq):
    path = seq / "velodyne" / "000001.bin"
    path.write_bytes(path.read_bytes()[:-5])


def empty_scan(seq):
    (seq / "velodyne" / "000001.bin").write_bytes(b"")


def nan_scan(seq):
    path = seq / "velodyne" / "000002.bin"
    points = np.fromfile(path, dtype=np.float32)
    points[8] = np.nan
    points.tofile(path)


@pytest.mark.parametrize("breaker, message", [
    (break_calib, r"calib\.txt"),
    (break_poses, r"poses\.txt.*\b2\b.*\b3\b|poses\.txt.*\b3\b.*\b2\b"),
    (truncate_scan, r"000001\.bin: .*not a multiple of 16"),
    (empty_scan, r"000001\.bin: empty scan"),
    (nan_scan, r"000002\.bin"),
])
def test_bad_input_names_the_file_and_writes_nothing(copy, tmp_path, breaker, message):
    breaker(copy / "sequences" / "01")
    with pytest.raises(DataFormatError, match=message):
        pipeline.run(copy, ["01"], cfg(), out=tmp_path / "out", progress=False)
    assert not outputs(tmp_path / "out")


def test_missing_sequence(copy, tmp_path):
    with pytest.raises(DataFormatError, match=r"sequences/07: sequence not found"):
        pipeline.run(copy, ["01", "07"], cfg(), out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_poses_suggests_estimation(copy, tmp_path):
    (copy / "sequences" / "01" / "poses.txt").unlink()
    with pytest.raises(DataFormatError) as error:
        pipeline.run(copy, ["01"], cfg(), out=tmp_path / "out", progress=False)
    target = tmp_path / "out" / "sequences" / "01" / "poses.txt"
    assert str(error.value) == (
        f"{copy / 'sequences' / '01' / 'poses.txt'}: poses file not found; pass --estimate-poses to estimate the "
        f"LiDAR poses with KISS-ICP odometry (they are written to {target})")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- CLI
def preprocess(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "tools/preprocess.py", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


def test_cli_writes_groups_and_png(tiny_dataset, tmp_path):
    result = preprocess("--dataset", tiny_dataset, "--sequences", "01", "--out", tmp_path / "out",
                        "--render", tmp_path / "png", "--no-progress", *SMALL)
    assert result.returncode == 0, result.stderr
    assert "sequence 01: complete; 3 scans (3 written now)" in result.stdout
    png = tmp_path / "png" / "01_000001.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_bad_input_is_one_line(copy, tmp_path):
    truncate_scan(copy / "sequences" / "01")
    result = preprocess("--dataset", copy, "--sequences", "01", "--out", tmp_path / "out", "--no-progress")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "000001.bin" in result.stderr and "Traceback" not in result.stderr


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


def is_ready_worker(pid: int) -> bool:
    """A pool worker past its initializer, which makes it ignore SIGINT."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        ignored = re.search(r"^SigIgn:\s*([0-9a-f]+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return False
    return b"spawn_main" in cmdline and bool(int(ignored.group(1), 16) >> (signal.SIGINT - 1) & 1)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie no longer runs


def gone(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not any(map(alive, pids))


BUSY = [f"{i:02d}" for i in range(24)]


@pytest.fixture(scope="module")
def busy_dataset(tiny_dataset, tmp_path_factory):
    """Sequences 00 and 01 of the tiny dataset plus 22 more copies of 00 (links): enough windows
    that a run with two workers is still going when the test acts on it."""
    root = tmp_path_factory.mktemp("busy")
    (root / "sequences").mkdir()
    for name in BUSY:
        (root / "sequences" / name).symlink_to(tiny_dataset / "sequences" / ("01" if name == "01" else "00"))
    return root


@pytest.fixture
def two_workers(busy_dataset, tmp_path):
    """The CLI with --workers 2 (a process group of its own), once both workers are ready:
    (the process, its workers' pids, the output root)."""
    if sys.platform != "linux":
        pytest.skip("workers die with the parent through a Linux prctl")
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "tools/preprocess.py", "--dataset", str(busy_dataset), "--sequences",
                            *BUSY, "--out", str(out), "--workers", "2", "--no-progress", *SMALL], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           # as from a terminal, even when pytest itself runs in the background with
                           # SIGINT ignored (which spawned workers would inherit, making them look ready)
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, workers = time.monotonic() + 60, []
    try:
        while len(workers) < 2:
            assert run.poll() is None, run.stderr.read()
            assert time.monotonic() < deadline, "the two workers did not start"
            time.sleep(0.05)
            workers = [pid for pid in children(run.pid) if is_ready_worker(pid)]
        yield run, workers, out
    finally:
        for pid in filter(alive, workers):  # first: a stopped orphan holds the stderr pipe open
            os.kill(pid, signal.SIGKILL)
        run.kill()
        run.communicate()


def test_killed_cli_takes_its_workers_along_and_reruns(two_workers, busy_dataset, reference_run):
    run, workers, out = two_workers
    for pid in workers:  # stopped mid-window, they cannot leave on their own (broken pipe to the parent)
        os.kill(pid, signal.SIGSTOP)
    run.kill()
    run.wait()
    assert gone(workers, 2)
    summary = pipeline.run(busy_dataset, BUSY, cfg(), out=out, progress=False)
    assert all(summary.sequences[name]["status"] == "complete" for name in BUSY)
    ours = {k: v for k, v in outputs(out).items() if k.startswith(("sequences/00/", "sequences/01/"))}
    assert ours == outputs(reference_run[0])
    copy = {k.replace("sequences/07/", "sequences/00/"): v for k, v in outputs(out).items() if "sequences/07/" in k}
    assert copy == {k: v for k, v in ours.items() if k.startswith("sequences/00/")}


def test_ctrl_c_stops_the_workers_quietly(two_workers):
    run, workers, _ = two_workers
    os.killpg(run.pid, signal.SIGINT)  # as the terminal does: to the whole process group
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == 130 and stderr == "interrupted\n"
    assert gone(workers, 2)


def test_cli_on_real_scans_with_estimated_poses(kitti_real, tmp_path):
    """The three real KITTI scans as a sequence without poses or calib: KISS-ICP poses, groups, PNG."""
    velodyne = tmp_path / "real" / "sequences" / "00" / "velodyne"
    velodyne.mkdir(parents=True)
    for p in kitti_real:
        shutil.copy(p, velodyne / p.name)
    result = preprocess("--dataset", tmp_path / "real", "--sequences", "00", "--estimate-poses",
                        "--render", tmp_path / "png", "--no-progress")
    assert result.returncode == 0, result.stderr
    seq = velodyne.parent
    assert len(sk.read_poses(seq / "poses.txt")) == 3 and (seq / "calib.txt").is_file()
    for p in kitti_real:
        groups = pipeline.read_groups(seq / "groups" / f"{p.stem}.group", p.stat().st_size // 16)
        assert 0.4 < np.mean(groups == -1) < 0.8 and len(np.unique(groups)) > 50
    assert (tmp_path / "png" / "00_000001.png").is_file()


# ---------------------------------------------------------------------- read-only datasets
@pytest.fixture
def without_poses(tiny_dataset, tmp_path):
    """Sequences 00 and 01 of the tiny dataset without poses.txt (calib.txt kept)."""
    root = tmp_path / "data"
    for name in ("00", "01"):
        shutil.copytree(tiny_dataset / "sequences" / name, root / "sequences" / name,
                        ignore=shutil.ignore_patterns("poses.txt"))
    return root


def test_read_only_dataset_with_estimated_poses_writes_only_to_out(without_poses, tmp_path):
    """The issue's case: `--estimate-poses --out` on a dataset mounted read-only. The poses go to
    OUT (with a copy of the input's calib.txt), a rerun without the flag and the ISCC pairs read
    the groups from OUT, and the dataset's files and folders are untouched (checked byte for byte,
    since as root chmod stops nothing)."""
    from voxseg.data.pretrain_pairs import ISCCPairs

    out = tmp_path / "out"
    with read_only(without_poses) as before:
        result = preprocess("--dataset", without_poses, "--sequences", "01", "--out", out, "--estimate-poses",
                            "--no-progress", *SMALL)
        assert result.returncode == 0, result.stderr
        assert "sequence 01: complete; 3 scans (3 written now)" in result.stdout
        assert snapshot(without_poses) == before
        sequence = out / "sequences" / "01"
        source_calib = without_poses / "sequences" / "01" / "calib.txt"
        assert (sequence / "calib.txt").read_bytes() == source_calib.read_bytes()
        poses = sk.read_poses(sequence / "poses.txt")
        assert poses.shape == (3, 4, 4) and np.allclose(poses[0], np.eye(4), atol=1e-6)
        manifest = json.loads((sequence / "groups" / "manifest.json").read_text())
        assert manifest["poses"] == str((sequence / "poses.txt").resolve())

        again = pipeline.run(without_poses, ["01"], cfg(), out=out, progress=False)  # no estimate_poses
        assert again.sequences["01"]["status"] == "already complete"
        pairs = ISCCPairs(str(without_poses), ["01"], groups_root=str(out), group_params={"stacking": {"window": 2}},
                          max_frame_distance=1)
        pairs.check(full=True, progress=False)
        assert pairs[0]["pair"] == "01/000001"
        assert snapshot(without_poses) == before


def test_read_only_dataset_without_the_flag_is_one_line_and_writes_nothing(without_poses, tmp_path):
    out = tmp_path / "out"
    with read_only(without_poses) as before:
        result = preprocess("--dataset", without_poses, "--sequences", "01", "--out", out, "--no-progress")
        assert snapshot(without_poses) == before
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"error: {without_poses / 'sequences' / '01' / 'poses.txt'}: poses file not found; pass --estimate-poses "
        f"to estimate the LiDAR poses with KISS-ICP odometry (they are written to "
        f"{out / 'sequences' / '01' / 'poses.txt'})\n")
    assert not out.exists()


def test_no_poses_are_written_while_a_later_sequence_is_refused(without_poses, tmp_path):
    """Every sequence's poses are estimated before any is written: a scan of 01 that KISS-ICP
    cannot register (all points within 2 m) leaves no poses of 00 behind either."""
    bad = without_poses / "sequences" / "01" / "velodyne" / "000002.bin"
    points = sk.read_scan(bad)
    points[:, :3] *= 2.0 / np.linalg.norm(points[:, :3], axis=1, keepdims=True).max()
    sk.write_scan(bad, points)
    out = tmp_path / "out"
    with read_only(without_poses) as before:
        with pytest.raises(DataFormatError) as error:
            pipeline.run(without_poses, ["00", "01"], cfg(), out=out, estimate_poses=True, progress=False)
        assert snapshot(without_poses) == before
    assert str(error.value) == f"{bad}: no points between 3.0 and 100.0 m; cannot register it"
    assert not out.exists()
