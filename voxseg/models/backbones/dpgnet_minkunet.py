"""MinkUNet with DPGNet's differentiable grouping into cliques between its encoder stages (Cheng et al.).

The paper puts its grouping into PointNet++'s set abstraction layers (Sec. 3.3, Algorithm 1):
where the encoder passes from one level of points to the next, the points are grouped around the
next level's centroids by soft associations (eqs. 1-2, voxseg.models.cliques), and the
centroids' features computed from their groups. Here a level is a tensor stride of the encoder
and the next level's voxels are the cells of the grid twice as coarse, exactly the coordinates
the strided convolution that follows produces: so the cliques are seeded at the next stage's
voxels, and each voxel is associated with the cliques of the 27 cells around its own.

A clique block at level l (features F at tensor stride l, C channels):

  G  = Linear(F)                       the k-dim features grouped on (SSN's learnt pixel features)
  Q, S = cliques(G)                    eqs. 1-2, T iterations, cells of stride 2 l
  P  = pool(F)                         eq. 2 applied to F: the clique features
  F' = ReLU(F + BN(Linear(Q^ P)))      the clique features scattered back (SSN), added residually

F' replaces F as the stage output (and hence as the skip connection and as the input of the
strided convolution). Choices the paper leaves open: the levels (`levels`, default 2, 4, 8: three
groupings, after the first three encoder stages; the paper does not say which set abstraction
layers it changes, and Fig. 7's caption reads "performs differentiable grouping for three times";
level 1, the stem's output, is the costliest and off by default), T (`iterations`, default 3, the
best accuracy of Table 2), the grouping width k (`grouping_dim`, SSN uses 20), the residual
fusion, and the normalisation of Q (see voxseg.models.cliques).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn as nn

from voxseg.config import Range
from voxseg.models.backbones.minkunet import MinkUNet14A, MinkUNetBase
from voxseg.models.cliques import DifferentiableGrouping
from voxseg.registry import BACKBONES
from voxseg.sparse import ME

LEVELS = (1, 2, 4, 8)  # tensor strides of the stem and of encoder stages 1-3: each has a coarser next stage


class CliqueBlock(nn.Module):
    """Group the voxels of a sparse tensor into cliques on the next-coarser grid and add the
    scattered-back clique features to every voxel (see the module docstring)."""

    def __init__(self, channels: int, grouping_dim: int, iterations: int, normalize: Literal["softmax", "none"],
                 bn_momentum: float = 0.1):
        super().__init__()
        self.embed = nn.Linear(channels, grouping_dim)
        self.grouping = DifferentiableGrouping(stride=2, iterations=iterations, normalize=normalize)
        self.fuse = nn.Sequential(nn.Linear(channels, channels), nn.BatchNorm1d(channels, momentum=bn_momentum))

    def forward(self, x: ME.SparseTensor) -> ME.SparseTensor:
        cliques = self.grouping(x, self.embed(x.F))
        back = cliques.scatter(cliques.pool(x.F))
        return ME.SparseTensor(torch.relu(x.F + self.fuse(back)), coordinate_map_key=x.coordinate_map_key,
                               coordinate_manager=x.coordinate_manager)


class DPGNetMinkUNetBase(MinkUNetBase):
    """MinkUNetBase with a CliqueBlock on the features of each tensor stride in `levels`."""

    def __init__(self, in_channels: Annotated[int, Range(ge=1)] = 1, voxel_size: Annotated[float, Range(gt=0)] = 0.1,
                 bn_momentum: Annotated[float, Range(ge=0, le=1)] = 0.1, levels: list[int] = [2, 4, 8],  # noqa: B006
                 grouping_dim: Annotated[int, Range(ge=1)] = 16, iterations: Annotated[int, Range(ge=1)] = 3,
                 normalize: Literal["softmax", "none"] = "softmax"):
        """levels: tensor strides (1, 2, 4, 8) whose features are grouped; grouping_dim: k; iterations: T."""
        super().__init__(in_channels=in_channels, voxel_size=voxel_size, bn_momentum=bn_momentum)
        bad = [level for level in levels if level not in LEVELS]
        if bad or len(set(levels)) != len(levels):
            raise ValueError(f"levels must be distinct tensor strides among {LEVELS}, got {levels}")
        self.levels = sorted(levels)
        width = dict(zip(LEVELS, [self.INIT_DIM, *(p * self.BLOCK.expansion for p in self.PLANES[:3])], strict=True))
        # `grouping`, as saved checkpoints name its tensors (backbone.grouping.<level>.*)
        self.grouping = nn.ModuleDict({str(level): CliqueBlock(width[level], grouping_dim, iterations, normalize,
                                                               bn_momentum) for level in self.levels})

    def _add_cliques(self, x: ME.SparseTensor, level: int) -> ME.SparseTensor:
        return self.grouping[str(level)](x) if str(level) in self.grouping else x

    def forward_sparse(self, x: ME.SparseTensor) -> ME.SparseTensor:
        """MinkUNetBase.forward_sparse with the clique blocks after the stem and encoder stages."""
        skips = [self._add_cliques(self.stem(x), 1)]
        out = skips[0]
        for stage, (down, block) in enumerate(zip(self.down, self.encoder, strict=True)):
            out = self._add_cliques(block(down(out)), 2 ** (stage + 1))
            skips.append(out)
        skips.pop()
        for up, block in zip(self.up, self.decoder, strict=True):
            out = block(ME.cat(up(out), skips.pop()))
        return out


@BACKBONES.register()
class DPGNetMinkUNet14A(DPGNetMinkUNetBase):
    """MinkUNet14A's depth and widths with cliques between its encoder stages."""

    LAYERS = MinkUNet14A.LAYERS
    PLANES = MinkUNet14A.PLANES
