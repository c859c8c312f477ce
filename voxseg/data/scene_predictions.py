"""Indoor predictions (S3DIS, ScanNet) in the formats of the ScanNet benchmark, which its
evaluate_semantic_label.py and evaluate_semantic_instance.py read:

    OUT/semantic/NAME.txt      one raw class id per point, one per line (ScanNet: the NYU40 id)
    OUT/instance/NAME.txt      one line per predicted instance: "LEAF/KKK.txt LABEL CONFIDENCE",
                               LABEL the raw id of the class most of its points are predicted as,
                               CONFIDENCE the shortest decimal that reads back as the same
                               float (repr), so no rounding ties or reorders instances for AP
    OUT/instance/NAME/KKK.txt  instance KKK's mask: one 0 or 1 per point, one per line

NAME is the sample's name: a ScanNet scene (scene0707_00), or Area_N/ROOM for S3DIS; LEAF its last
part, so each mask path is relative to its listing file, as the benchmark requires. Points are in
the order the reader reads them: a ScanNet mesh's vertices; ROOM.txt's lines, or S3DIS's
annotation files by class then number (voxseg.data.s3dis).

Scenes are written to a staging folder first and published scene by scene (publish_scene), so
files of other scenes under OUT stay as they are, and a scene's old masks never outlive the
listing that names them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

__all__ = ["write_scene", "publish_scene", "instance_labels"]


def _lines(values: np.ndarray) -> str:
    return "".join(f"{v}\n" for v in values.tolist())


def _mask_bytes(mask: np.ndarray) -> bytes:
    """'0\\n' / '1\\n' per point: the masks are the bulk of the output (points x instances)."""
    out = np.empty(2 * len(mask), dtype=np.uint8)
    out[0::2] = mask.astype(np.uint8) + ord("0")
    out[1::2] = ord("\n")
    return out.tobytes()


def instance_labels(segment: np.ndarray, instance: np.ndarray) -> dict[int, int]:
    """{instance id: the train id most of its points are predicted as} for ids >= 0 (ties: the
    smaller train id)."""
    labels = {}
    for k in np.unique(instance[instance >= 0]).tolist():
        labels[k] = int(np.bincount(segment[instance == k]).argmax())
    return labels


def write_scene(folder: Path, name: str, semantic_raw: np.ndarray, instances: list[tuple[np.ndarray, int, float]]
                | None) -> None:
    """Write one scene under `folder` (a staging folder): the semantic file, and with
    `instances` (mask (N,) bool, raw label, confidence; None for a semantic-only model) the
    listing and the masks, numbered 000.. in the given order."""
    semantic = folder / "semantic" / f"{name}.txt"
    semantic.parent.mkdir(parents=True, exist_ok=True)
    semantic.write_text(_lines(semantic_raw))
    if instances is None:
        return
    listing = folder / "instance" / f"{name}.txt"
    masks = listing.with_suffix("")
    masks.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (mask, label, confidence) in enumerate(instances):
        (masks / f"{k:03d}.txt").write_bytes(_mask_bytes(mask))
        lines.append(f"{masks.name}/{k:03d}.txt {label} {float(confidence)!r}\n")
    listing.write_text("".join(lines))


def publish_scene(staging: Path, out: Path, name: str) -> None:
    """Move one staged scene into `out`: its semantic file, then its masks folder and listing
    (or, for a semantic-only model, remove an older model's listing and masks of the scene)."""
    (out / "semantic" / name).parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging / "semantic" / f"{name}.txt", out / "semantic" / f"{name}.txt")
    listing, masks = out / "instance" / f"{name}.txt", out / "instance" / name
    staged_listing = staging / "instance" / f"{name}.txt"
    old = masks.with_name(f".{masks.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if masks.exists():
        os.replace(masks, old)  # the old listing names old masks: both go
    if staged_listing.exists():
        listing.parent.mkdir(parents=True, exist_ok=True)  # a semantic-only model makes no instance folder
        os.replace(staged_listing.with_suffix(""), masks)
        os.replace(staged_listing, listing)
    elif listing.exists():
        listing.unlink()
    shutil.rmtree(old, ignore_errors=True)
