#!/usr/bin/env python3
"""Self-supervised pretraining (ISCC) on preprocessed LiDAR sequences.

    python tools/preprocess.py --dataset data/synthetic --sequences 00 01 02 03     # groups first
    python tools/pretrain.py --config configs/pretrain/synthetic_minkunet14a_iscc.yaml
    python tools/pretrain.py --config X.yaml train.max_steps=50 output_dir=runs/try
    python tools/pretrain.py --config X.yaml --resume                    # continue output_dir's run exactly
    torchrun --standalone --nproc_per_node 4 tools/pretrain.py --config X.yaml
    python tools/finetune.py --config Y.yaml --pretrained runs/pretrain_iscc/checkpoints/encoder.pt

Writes to output_dir: config.yaml (fully resolved), checkpoints/last.pt (every
train.checkpoint_every steps, at the end and on Ctrl-C), checkpoints/encoder.pt (the student
backbone, at the end), tb/ (TensorBoard: each loss term, prototype_entropy, queue_fill).
"""

from voxseg.cli import exit_on_interrupt, main_guard, parse_args_with_overrides, training_parser

with exit_on_interrupt():
    from voxseg.engine import pretrain


@main_guard
def main() -> None:
    parser = training_parser(__doc__)
    args = parse_args_with_overrides(parser)
    cfg = pretrain.resolve(args.config, args.overrides)
    pretrain.run(cfg, resume=args.resume, allow_config_change=args.allow_config_change)


if __name__ == "__main__":
    main()
