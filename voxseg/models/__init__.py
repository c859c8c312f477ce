"""Backbones, heads, losses and the Segmentor that joins them. Importing this package registers
them for YAML configs."""

from voxseg import pretrain  # noqa: F401  (ISCC self-supervised pretraining model)
from voxseg.models import backbones, heads, losses, segmentor  # noqa: F401
from voxseg.registry import MODELS


def build_model(cfg: dict):
    return MODELS.build(cfg)


__all__ = ["build_model"]
