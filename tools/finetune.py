#!/usr/bin/env python3
"""Fine-tune a backbone and head on SemanticKITTI-format data.

    python tools/finetune.py --config configs/finetune/synthetic_minkunet14.yaml
    python tools/finetune.py --config X.yaml train.max_steps=50 output_dir=runs/try
    python tools/finetune.py --config X.yaml --resume                 # continue output_dir's run exactly
    python tools/finetune.py --config X.yaml --pretrained runs/pretrain/checkpoints/last.pt

--pretrained loads the backbone of a voxseg checkpoint (a pretraining run's encoder.pt or last.pt,
or a fine-tuning run's) only when it fits the model: the same backbone type, input channels and
input features (data.train.features) as its run recorded, and every tensor of the same name and
shape. Anything else is refused in one line before the run writes anything;
--allow-partial-pretrained loads the matching tensors anyway (pretrained.txt lists the rest).

Writes to output_dir: config.yaml (fully resolved), label_subset.txt, checkpoints/{last,best}.pt,
tb/ (TensorBoard), metrics.json.
"""

from voxseg.cli import exit_on_interrupt, main_guard, parse_args_with_overrides, training_parser

with exit_on_interrupt():
    from voxseg.engine import finetune


@main_guard
def main() -> None:
    parser = training_parser(__doc__)
    parser.add_argument("--pretrained", metavar="PATH", help="load backbone weights from a checkpoint")
    parser.add_argument("--allow-partial-pretrained", action="store_true",
                        help="load the --pretrained tensors that match even when the backbone type, input channels, "
                             "features or some tensors differ")
    args = parse_args_with_overrides(parser)
    cfg = finetune.resolve(args.config, args.overrides)
    finetune.run(cfg, resume=args.resume, pretrained=args.pretrained, allow_config_change=args.allow_config_change,
                 allow_partial_pretrained=args.allow_partial_pretrained)


if __name__ == "__main__":
    main()
