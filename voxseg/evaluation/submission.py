"""Benchmark submissions: prediction files packed into the zip a benchmark's server takes, checked
the way the server checks them, so that a bad archive is refused here rather than there.

SemanticKITTI (`segmentation` and `panoptic`, the CodaLab competitions; the layout and the checks
of semantic-kitti-api's validate_submission.py):

    description.txt                        optional: `name: ...`, `pdf url: ...`, `code url: ...`
    sequences/                             folder entries, which validate_submission.py requires
    sequences/NN/
    sequences/NN/predictions/
    sequences/NN/predictions/FFFFFF.label  one per scan of the dataset's sequences/NN/velodyne, its
                                           size / 4 (uint32 labels) equal to the scan's size / 16
                                           (4 float32 per point)

for sequences 11-21 (the test split) unless others are chosen. The .label files are packed byte
for byte, for both tasks: the semantic task's evaluate_semantics.py reads only the lower 16 bits
(`label & 0xFFFF`), so the instance ids in the upper 16 change no score, and the archive holds
exactly the files tools/evaluate.py scores. The panoptic task reads the upper 16 bits as instance
ids: a semantic-only model's files (all 0) are valid, with each thing class of a scan one segment.

ScanNet (`scannet-semantic` and `scannet-instance`; the benchmark's documented submission format,
which its evaluate_semantic_label.py and evaluate_semantic_instance.py read), from the files
voxseg.data.scene_predictions writes (OUT/semantic/NAME.txt, OUT/instance/NAME.txt and its masks):

    SCENE.txt                              semantic: one class id per mesh vertex, one per line
    SCENE.txt                              instance: one `predicted_masks/SCENE_KKK.txt LABEL
                                           CONFIDENCE` line per instance (its listing, with the mask
                                           paths rewritten; label and confidence as written)
    predicted_masks/SCENE_KKK.txt          instance: a mask, one value per vertex, one per line

for every scene of the split (scannetv2_test.txt under scans_test by default), each file with one
line per vertex of the scene's SCENE_vh_clean_2.ply. The benchmark takes the method's details in
its web form, not in the archive.

Checks beyond the servers': a class id that the label config does not list is refused (the
evaluators would silently count its points as unlabeled or wrong; voxseg.evaluation.semantic.
check_known_ids), and so is a prediction file for no scan of the dataset (a mismatched dataset).

Every check that file sizes and headers allow runs before anything is written; the checks of
content (class ids, line counts) run as each file is packed into a temporary file beside the
archive, which replaces it only when every file passed (voxseg.atomic): a failure leaves an
existing archive as it was.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tqdm import tqdm

from voxseg import atomic
from voxseg.data import semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.data.scannet import ScanNet, ply_vertices
from voxseg.errors import DataFormatError, VoxsegError
from voxseg.evaluation.semantic import check_known_ids

__all__ = ["KITTI_TASKS", "SCANNET_TASKS", "KITTI_TEST_SEQUENCES", "DESCRIPTION_FIELDS", "Member",
           "semantic_kitti_members", "scannet_meshes", "scannet_semantic_members", "scannet_instance_members",
           "description_member", "write_submission"]

KITTI_TASKS = ("segmentation", "panoptic")  # validate_submission.py's --task names
SCANNET_TASKS = ("scannet-semantic", "scannet-instance")
KITTI_TEST_SEQUENCES = tuple(f"{s:02d}" for s in range(11, 22))
SCANNET_TEST_SPLIT, SCANNET_TEST_SCANS = "scannetv2_test.txt", "scans_test"
MASKS = "predicted_masks"  # the folder of the ScanNet instance masks, as the benchmark's example names it
DESCRIPTION = "description.txt"
#: description.txt's keys, as semantic-kitti-api's README lists them (absent ones: `Anonymous`, `n/a`)
DESCRIPTION_FIELDS = ("name", "pdf url", "code url")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # every entry's timestamp: the same predictions give the same archive


@dataclass(frozen=True)
class Member:
    """One entry of the archive: `name` inside it (a folder's ends in `/`) and its bytes, either
    `data` or the file `source`, which `check` (given its bytes) refuses with a DataFormatError."""

    name: str
    source: Path | None = None
    data: bytes = b""
    check: Callable[[bytes], None] | None = None

    def content(self) -> bytes:
        if self.source is None:
            return self.data
        try:
            data = self.source.read_bytes()
        except OSError as exc:
            raise DataFormatError(f"{self.source}: cannot read ({exc.strerror or exc})") from None
        if self.check is not None:
            self.check(data)
        return data


def _folder(name: str) -> Member:
    return Member(name.rstrip("/") + "/")


# ---------------------------------------------------------------------------- SemanticKITTI
def _label_check(path: Path, labels: LabelConfig) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        check_known_ids(np.frombuffer(data, dtype=np.uint32), labels, path)

    return check


def semantic_kitti_members(predictions: str | os.PathLike, dataset: str | os.PathLike,
                           sequences: Iterable[int | str], labels: LabelConfig) -> list[Member]:
    """The entries of a SemanticKITTI submission: PREDICTIONS/sequences/NN/predictions/FFFFFF.label
    for every scan DATASET/sequences/NN/velodyne/FFFFFF.bin, their sizes checked (a missing
    sequence, a missing or extra prediction, a label count other than the scan's points is a
    DataFormatError); each file's class ids are checked as it is packed."""
    predictions = Path(predictions)
    members = [_folder("sequences")]
    for sequence in dict.fromkeys(map(sk.sequence_name, sequences)):  # each once, in the given order
        frames = sk.frame_ids(dataset, sequence)
        velodyne = sk.sequence_dir(dataset, sequence) / "velodyne"
        if not frames:
            raise DataFormatError(f"{velodyne}: no scans (.bin files)")
        folder = sk.sequence_dir(predictions, sequence, must_exist=False) / "predictions"
        if not folder.is_dir():
            raise DataFormatError(f"{folder}: predictions folder not found (sequence {sequence})")
        missing = [f for f in frames if not (folder / f"{f}.label").is_file()]
        if missing:
            raise DataFormatError(f"{folder / f'{missing[0]}.label'}: no prediction for scan "
                                  f"{velodyne / f'{missing[0]}.bin'} ({len(missing)} of the {len(frames)} scans "
                                  f"of sequence {sequence} have none)")
        extra = sorted({p.stem for p in folder.glob("*.label")} - set(frames))
        if extra:
            raise DataFormatError(f"{folder / f'{extra[0]}.label'}: a prediction for no scan of {velodyne} "
                                  f"({len(extra)} such file{'s' if len(extra) > 1 else ''}): another dataset's?")
        members += [_folder(f"sequences/{sequence}"), _folder(f"sequences/{sequence}/predictions")]
        for frame in frames:
            path = folder / f"{frame}.label"
            sk.label_size(path, sk.scan_size(velodyne / f"{frame}.bin"))
            members.append(Member(f"sequences/{sequence}/predictions/{frame}.label", path,
                                  check=_label_check(path, labels)))
    return members


def description_member(path: str | os.PathLike | None = None, fields: dict[str, str] | None = None) -> Member:
    """description.txt: the file `path`, packed as it is, or one `key: value` line per non-empty
    value of `fields` (DESCRIPTION_FIELDS keys), in the given order."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DataFormatError(f"{path}: description file not found")
        return Member(DESCRIPTION, path)
    fields = {key: value for key, value in (fields or {}).items() if value}
    for key, value in fields.items():
        if key not in DESCRIPTION_FIELDS:
            raise ValueError(f"description field {key!r} is not one of {DESCRIPTION_FIELDS}")
        if "\n" in value or "\r" in value:
            raise VoxsegError(f"description: the {key} must be one line, got {value!r}")
    return Member(DESCRIPTION, data="".join(f"{key}: {value}\n" for key, value in fields.items()).encode())


# ---------------------------------------------------------------------------------- ScanNet
def scannet_meshes(dataset: str | os.PathLike, split_file: str | None = None, scenes: list[str] | None = None,
                   scans_dir: str = SCANNET_TEST_SCANS) -> dict[str, Path]:
    """{scene: its SCENE_vh_clean_2.ply} for the scenes listed in `split_file` (relative to
    `dataset` unless absolute; default scannetv2_test.txt unless `scenes` are given) under
    DATASET/`scans_dir`, as voxseg.data.scannet.ScanNet reads them."""
    if scenes is None and split_file is None:
        split_file = SCANNET_TEST_SPLIT
    data = ScanNet(str(dataset), None, split_file=split_file, scenes=scenes, scans_dir=scans_dir, labels=False)
    return {scene: data.files(i)[0] for i, scene in enumerate(data.items)}


def _lines(data: bytes, path: Path, mesh: Path, count: int) -> np.ndarray:
    """The integers of a text file with one per line, which must be one per vertex of `mesh`."""
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not a text file of integers (byte {exc.start} is not ASCII)") from None
    if len(lines) != count:
        raise DataFormatError(f"{path}: {len(lines)} lines for the {count} vertices of {mesh}")
    try:
        return np.array(lines, dtype=str).astype(np.int64)
    except ValueError as exc:
        number = next((i for i, line in enumerate(lines, 1) if not _is_int(line)), None)
        problem = f"line {number}: {lines[number - 1]!r} is not an integer" if number else f"not integers ({exc})"
        raise DataFormatError(f"{path}: {problem}") from None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _check_class_ids(ids: np.ndarray, labels: LabelConfig, path: Path) -> None:
    """check_known_ids for class ids read as text, which need not fit the 16 bits it looks at."""
    wide = ids[(ids < 0) | (ids > 0xFFFF)]
    if len(wide):
        n = int((ids == wide[0]).sum())
        raise DataFormatError(f"{path}: class id {wide[0]} ({n} point{'' if n == 1 else 's'}) is not in {labels.path}")
    check_known_ids(ids, labels, path)


def _semantic_check(path: Path, mesh: Path, count: int, labels: LabelConfig) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        _check_class_ids(_lines(data, path, mesh, count), labels, path)

    return check


def _mask_check(path: Path, mesh: Path, count: int) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        _lines(data, path, mesh, count)

    return check


def scannet_semantic_members(predictions: str | os.PathLike, meshes: dict[str, Path],
                             labels: LabelConfig) -> list[Member]:
    """SCENE.txt for every scene of `meshes` (scannet_meshes), from PREDICTIONS/semantic/SCENE.txt
    (a missing one is a DataFormatError); line counts and class ids are checked as each is packed."""
    folder = Path(predictions) / "semantic"
    members = []
    for scene, mesh in meshes.items():
        path = folder / f"{scene}.txt"
        if not path.is_file():
            raise DataFormatError(f"{path}: no semantic prediction for scene {scene}")
        members.append(Member(f"{scene}.txt", path, check=_semantic_check(path, mesh, ply_vertices(mesh), labels)))
    return members


def _instance_line(line: str, number: int, listing: Path, folder: Path, labels: LabelConfig) -> tuple[Path, str]:
    """(mask file, `LABEL CONFIDENCE`) of one listing line, checked as evaluate_semantic_instance.py
    reads it (three fields, a relative mask path inside the prediction folder), with a known label."""
    where = f"{listing}: line {number}"
    parts = line.split(" ")
    if len(parts) != 3:
        raise DataFormatError(f"{where}: expected 'MASK LABEL CONFIDENCE', got {line!r}")
    relative, label, confidence = parts
    mask = Path(os.path.abspath(listing.parent / relative))
    if os.path.isabs(relative) or not mask.is_relative_to(os.path.abspath(folder)):
        raise DataFormatError(f"{where}: the mask path {relative} must be relative and inside {folder}")
    if not mask.is_file():
        raise DataFormatError(f"{mask}: mask file not found ({where})")
    if not _is_int(label):
        raise DataFormatError(f"{where}: the label {label!r} is not an integer")
    if int(label) not in labels.learning_map:
        raise DataFormatError(f"{where}: class id {int(label)} is not in {labels.path}")
    try:
        float(confidence)
    except ValueError:
        raise DataFormatError(f"{where}: the confidence {confidence!r} is not a number") from None
    return mask, f"{label} {confidence}"


def scannet_instance_members(predictions: str | os.PathLike, meshes: dict[str, Path],
                             labels: LabelConfig) -> list[Member]:
    """SCENE.txt and its masks predicted_masks/SCENE_KKK.txt (KKK: its line, from 000) for every
    scene of `meshes`, from PREDICTIONS/instance/SCENE.txt and the masks its lines name. The
    listings are checked line by line now (a missing one, a malformed line, a missing mask, an
    unknown label is a DataFormatError); the masks' line counts as each is packed."""
    folder = Path(predictions) / "instance"
    members = [_folder(MASKS)]
    for scene, mesh in meshes.items():
        listing = folder / f"{scene}.txt"
        if not listing.is_file():
            raise DataFormatError(f"{listing}: no instance prediction for scene {scene} (a semantic-only model "
                                  "writes none)")
        count = ply_vertices(mesh)
        lines, masks = [], []
        for number, line in enumerate(listing.read_text().splitlines(), 1):
            mask, fields = _instance_line(line, number, listing, folder, labels)
            name = f"{MASKS}/{scene}_{number - 1:03d}.txt"
            lines.append(f"{name} {fields}\n")
            masks.append(Member(name, mask, check=_mask_check(mask, mesh, count)))
        members += [Member(f"{scene}.txt", data="".join(lines).encode()), *masks]
    return members


# ---------------------------------------------------------------------------------- writing
def write_submission(members: list[Member], out: str | os.PathLike, progress: bool = False) -> None:
    """Pack `members` in order into the zip `out` (deflated; folders stored), checking each file's
    content as it goes; `out` is replaced only when all passed (a DataFormatError or a failed
    write leaves it as it was)."""
    out = Path(out)
    if out.suffix != ".zip":
        raise VoxsegError(f"{out}: a submission's name must end in .zip (the servers refuse others)")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"an archive entry is listed twice: {sorted(n for n in set(names) if names.count(n) > 1)}")
    with atomic.atomic_open(out, "wb") as f, zipfile.ZipFile(f, "w") as archive:
        for member in tqdm(members, desc=f"packing {out.name}", unit="file", disable=not progress):
            info = zipfile.ZipInfo(member.name, date_time=_EPOCH)
            if member.name.endswith("/"):
                info.external_attr = (0o40755 << 16) | 0x10  # a folder (MS-DOS directory bit)
                archive.writestr(info, b"")
            else:
                info.external_attr = 0o100644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, member.content())
