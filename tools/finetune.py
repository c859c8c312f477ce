#!/usr/bin/env python3
"""Fine-tune a backbone and head on SemanticKITTI-format data.

    python tools/finetune.py --config configs/finetune/synthetic_minkunet14.yaml
    python tools/finetune.py --config X.yaml train.max_steps=50 output_dir=runs/try
    python tools/finetune.py --config X.yaml --resume                 # continue output_dir's run exactly
    python tools/finetune.py --config X.yaml --pretrained runs/pretrain/checkpoints/last.pt

Writes to output_dir: config.yaml (fully resolved), label_subset.txt, checkpoints/{last,best}.pt,
tb/ (TensorBoard), metrics.json.
"""

import argparse

from voxseg.cli import main_guard
from voxseg.engine import finetune


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (may name _base_ files)")
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoints/last.pt")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume even though the config differs from the run's (not the model)")
    parser.add_argument("--pretrained", metavar="PATH", help="load backbone weights from a checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.max_steps=50")
    args = parser.parse_args()
    cfg = finetune.resolve(args.config, args.overrides)
    finetune.run(cfg, resume=args.resume, pretrained=args.pretrained, allow_config_change=args.allow_config_change)


if __name__ == "__main__":
    main()
