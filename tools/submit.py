#!/usr/bin/env python3
"""Pack test-set predictions into a benchmark's submission zip, checked as its server checks it.

    python tools/submit.py --task segmentation --predictions PRED --dataset /data/SemanticKITTI/dataset \\
        --out submission.zip [--name MyNet --pdf-url URL --code-url URL | --description FILE]
    python tools/submit.py --task scannet-instance --predictions PRED --dataset /data/scannet --out instance.zip

Tasks (PRED is tools/infer.py's --out):
  segmentation, panoptic   SemanticKITTI's CodaLab competitions: PRED/sequences/NN/predictions/*.label
                           for every scan of DATASET/sequences/NN/velodyne, sequences 11-21 unless
                           --sequences; packed byte for byte as semantic-kitti-api's
                           validate_submission.py expects them (folder entries, one .label per scan,
                           as many labels as points), with description.txt if asked for.
  scannet-semantic         the ScanNet benchmark: PRED/semantic/SCENE.txt as SCENE.txt.
  scannet-instance         PRED/instance/SCENE.txt as SCENE.txt, its masks as predicted_masks/SCENE_KKK.txt.
                           ScanNet: the scenes of DATASET/scannetv2_test.txt under DATASET/scans_test
                           unless --split-file / --scenes / --scans-dir; one line per mesh vertex.

Every class id must be listed in the label config (default: SemanticKITTI's or ScanNet's). A bad
input stops the tool with one line, e.g.
    error: PRED/sequences/11/predictions/000007.label: 120 labels for a scan of 124 points
and leaves an existing --out as it was: the zip is written beside it under a temporary name and
renamed over it only when every file passed.
"""

import argparse
from pathlib import Path

from voxseg.cli import exit_on_interrupt, main_guard

with exit_on_interrupt():
    from voxseg.data.labels import LabelConfig
    from voxseg.errors import VoxsegError
    from voxseg.evaluation import submission

LABELS = Path(__file__).resolve().parents[1] / "configs" / "labels"
DEFAULT_LABELS = {"segmentation": "semantic-kitti.yaml", "panoptic": "semantic-kitti.yaml",
                  "scannet-semantic": "scannet.yaml", "scannet-instance": "scannet.yaml"}


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=(*submission.KITTI_TASKS, *submission.SCANNET_TASKS))
    parser.add_argument("--predictions", required=True, help="tools/infer.py's output folder")
    parser.add_argument("--dataset", required=True, help="the dataset root the predictions are of")
    parser.add_argument("--out", required=True, help="the zip to write (FILE.zip)")
    parser.add_argument("--label-config", help="class mapping (default: SemanticKITTI's or ScanNet's)")
    parser.add_argument("--sequences", nargs="+", default=list(submission.KITTI_TEST_SEQUENCES),
                        help="SemanticKITTI: the sequences to pack (default: 11 to 21, the test split)")
    parser.add_argument("--split-file",
                        help="ScanNet: a scene list relative to --dataset (default: scannetv2_test.txt)")
    parser.add_argument("--scenes", nargs="+", help="ScanNet: the scenes to pack instead of a split file")
    parser.add_argument("--scans-dir", default=submission.SCANNET_TEST_SCANS,
                        help="ScanNet: the scene folder under --dataset (default: scans_test)")
    parser.add_argument("--description", help="SemanticKITTI: a description.txt to pack as it is")
    for field in submission.DESCRIPTION_FIELDS:
        parser.add_argument(f"--{field.replace(' ', '-')}", dest=field, metavar=field.split()[-1].upper(),
                            help=f"SemanticKITTI: description.txt's `{field}:` line")
    args = parser.parse_args()
    fields = {field: getattr(args, field) for field in submission.DESCRIPTION_FIELDS}
    described = args.description is not None or any(fields.values())
    if args.description is not None and any(fields.values()):
        parser.error("give --description FILE or the description's fields, not both")
    if args.split_file and args.scenes:
        parser.error("give --split-file or --scenes, not both")
    labels = LabelConfig.load(args.label_config or LABELS / DEFAULT_LABELS[args.task])
    if args.task in submission.KITTI_TASKS:
        members = submission.semantic_kitti_members(args.predictions, args.dataset, args.sequences, labels)
        if described:
            members.insert(0, submission.description_member(args.description, fields))
    else:
        if described:
            raise VoxsegError("the ScanNet benchmark takes the method's details in its submission form; "
                              "--description and its fields are for SemanticKITTI")
        meshes = submission.scannet_meshes(args.dataset, args.split_file, args.scenes, args.scans_dir)
        pack = {"scannet-semantic": submission.scannet_semantic_members,
                "scannet-instance": submission.scannet_instance_members}[args.task]
        members = pack(args.predictions, meshes, labels)
    submission.write_submission(members, args.out, progress=True)
    files = sum(not m.name.endswith("/") for m in members)
    print(f"{args.out}: {files} files for --task {args.task}")


if __name__ == "__main__":
    main()
