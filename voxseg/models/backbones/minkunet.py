"""MinkUNet: the sparse-convolution UNet family of MinkowskiEngine's examples/minkunet.py.

Choy, Gwak, Savarese, "4D Spatio-Temporal ConvNets: Minkowski Convolutional Neural Networks",
CVPR 2019. A family is a base class plus one-line subclasses that set the residual BLOCK, the
number of blocks per stage (LAYERS, encoder then decoder) and the stage widths (PLANES).

The backbone takes a batch of points, voxelizes it once (voxseg.sparse), runs the UNet on the
voxels and returns a BackboneOutput: the stride-1 voxel features, the point field and the map
between them. Unlike the example, it has no final 1x1 classifier: heads add their own.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn as nn

from voxseg import sparse  # first: imports MinkowskiEngine with its CPU-only warning silenced
from voxseg.config import Range
from voxseg.models.backbone_output import BackboneOutput
from voxseg.registry import BACKBONES
from voxseg.sparse import ME

from MinkowskiEngine.modules.resnet_block import BasicBlock, Bottleneck  # noqa: E402  isort: skip


class MinkUNetBase(nn.Module):
    BLOCK: type[BasicBlock | Bottleneck] = BasicBlock
    LAYERS: tuple[int, ...] = (2, 2, 2, 2, 2, 2, 2, 2)
    PLANES: tuple[int, ...] = (32, 64, 128, 256, 256, 128, 96, 96)
    INIT_DIM = 32
    D = 3

    def __init__(self, in_channels: Annotated[int, Range(ge=1)] = 1, voxel_size: Annotated[float, Range(gt=0)] = 0.1,
                 bn_momentum: Annotated[float, Range(ge=0, le=1)] = 0.1):
        """in_channels: per-point input features; voxel_size: metres per voxel edge."""
        super().__init__()
        if in_channels < 1 or not voxel_size > 0:
            raise ValueError(f"need in_channels >= 1 and voxel_size > 0, got {in_channels}, {voxel_size}")
        self.in_channels = in_channels
        self.voxel_size = voxel_size
        self.bn_momentum = bn_momentum
        self.out_channels = self.PLANES[7] * self.BLOCK.expansion
        P, L = self.PLANES, self.LAYERS

        self.inplanes = self.INIT_DIM
        self.stem = self._conv(in_channels, self.inplanes, kernel_size=5)
        self.down = nn.ModuleList()
        self.encoder = nn.ModuleList()
        for stage in range(4):  # stride 1 -> 2 -> 4 -> 8 -> 16
            self.down.append(self._conv(self.inplanes, self.inplanes, kernel_size=2, stride=2))
            self.encoder.append(self._make_layer(P[stage], L[stage]))
        skip_planes = [P[2], P[1], P[0]]
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for stage in range(4):  # stride 16 -> 8 -> 4 -> 2 -> 1, concatenating the encoder's skips
            self.up.append(self._conv(self.inplanes, P[4 + stage], kernel_size=2, stride=2, transpose=True))
            skip = skip_planes[stage] * self.BLOCK.expansion if stage < 3 else self.INIT_DIM
            self.inplanes = P[4 + stage] + skip
            self.decoder.append(self._make_layer(P[4 + stage], L[4 + stage]))

    def _conv(self, cin: int, cout: int, kernel_size: int, stride: int = 1, transpose: bool = False) -> nn.Sequential:
        Conv = ME.MinkowskiConvolutionTranspose if transpose else ME.MinkowskiConvolution
        return nn.Sequential(
            Conv(cin, cout, kernel_size=kernel_size, stride=stride, dimension=self.D),
            ME.MinkowskiBatchNorm(cout, momentum=self.bn_momentum),
            ME.MinkowskiReLU(inplace=True),
        )

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = None
        if self.inplanes != planes * self.BLOCK.expansion:
            downsample = nn.Sequential(
                ME.MinkowskiConvolution(self.inplanes, planes * self.BLOCK.expansion, kernel_size=1, dimension=self.D),
                ME.MinkowskiBatchNorm(planes * self.BLOCK.expansion, momentum=self.bn_momentum),
            )
        layers = [
            self.BLOCK(self.inplanes, planes, downsample=downsample, bn_momentum=self.bn_momentum, dimension=self.D)
        ]
        self.inplanes = planes * self.BLOCK.expansion
        layers += [
            self.BLOCK(self.inplanes, planes, bn_momentum=self.bn_momentum, dimension=self.D) for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def forward_sparse(self, x: ME.SparseTensor) -> ME.SparseTensor:
        """Voxel features at tensor stride 1 for a voxel-level sparse tensor."""
        skips = [self.stem(x)]
        out = skips[0]
        for down, block in zip(self.down, self.encoder, strict=True):
            out = block(down(out))
            skips.append(out)
        skips.pop()  # the stride-16 output is the bottleneck, not a skip
        for up, block in zip(self.up, self.decoder, strict=True):
            out = block(ME.cat(up(out), skips.pop()))
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> BackboneOutput:
        """Voxel features at stride 1 and the point <-> voxel map, for a collated batch (keys
        coord, feat, batch)."""
        if batch["feat"].shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, "
                             f"got {batch['feat'].shape[1]}")
        field = sparse.to_field(batch["coord"], batch["feat"], batch["batch"], self.voxel_size)
        voxel = self.forward_sparse(field.sparse())
        return BackboneOutput(voxel=voxel, field=field, inverse=field.inverse_mapping(voxel.coordinate_map_key).long())


class MinkUNet14(MinkUNetBase):
    LAYERS = (1, 1, 1, 1, 1, 1, 1, 1)


class MinkUNet18(MinkUNetBase):
    LAYERS = (2, 2, 2, 2, 2, 2, 2, 2)


class MinkUNet34(MinkUNetBase):
    LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)


@BACKBONES.register()
class MinkUNet50(MinkUNetBase):
    BLOCK = Bottleneck
    LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)


# Widths as in MinkowskiEngine's examples/minkunet.py. The example has no 18C; ours uses the C
# widths of 14C so that every depth comes in A, B and C.
@BACKBONES.register()
class MinkUNet14A(MinkUNet14):
    PLANES = (32, 64, 128, 256, 128, 128, 96, 96)


@BACKBONES.register()
class MinkUNet14B(MinkUNet14):
    PLANES = (32, 64, 128, 256, 128, 128, 128, 128)


@BACKBONES.register()
class MinkUNet14C(MinkUNet14):
    PLANES = (32, 64, 128, 256, 192, 192, 128, 128)


@BACKBONES.register()
class MinkUNet14D(MinkUNet14):
    PLANES = (32, 64, 128, 256, 384, 384, 384, 384)


@BACKBONES.register()
class MinkUNet18A(MinkUNet18):
    PLANES = (32, 64, 128, 256, 128, 128, 96, 96)


@BACKBONES.register()
class MinkUNet18B(MinkUNet18):
    PLANES = (32, 64, 128, 256, 128, 128, 128, 128)


@BACKBONES.register()
class MinkUNet18C(MinkUNet18):
    PLANES = (32, 64, 128, 256, 192, 192, 128, 128)


@BACKBONES.register()
class MinkUNet18D(MinkUNet18):
    PLANES = (32, 64, 128, 256, 384, 384, 384, 384)


@BACKBONES.register()
class MinkUNet34A(MinkUNet34):
    PLANES = (32, 64, 128, 256, 256, 128, 64, 64)


@BACKBONES.register()
class MinkUNet34B(MinkUNet34):
    PLANES = (32, 64, 128, 256, 256, 128, 64, 32)


@BACKBONES.register()
class MinkUNet34C(MinkUNet34):
    PLANES = (32, 64, 128, 256, 256, 128, 96, 96)
