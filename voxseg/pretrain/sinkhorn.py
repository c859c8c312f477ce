"""Sinkhorn-Knopp balanced assignments: the targets y of ISCC's global clustering loss.

The slides give L_c(f1, f2, F_g) with a queue F_g of past teacher features but not how y is made
from them; we follow SwAV (Caron et al., NeurIPS 2020), whose queue serves the same purpose: the
teacher's scores over the queue and the batch, (C + B, M), become a transport plan whose rows are
the samples and whose columns the prototypes, P = diag(u) exp(S / eps) diag(v), rescaled in turn
so that every prototype gets an equal share (1/M) and every sample one (1/(C + B)). SwAV uses
eps = 0.05 and 3 iterations; the batch's rows of P, scaled to sum to 1, are the targets.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """The transport plan P (R, M) for scores (R, M) (cosines to the prototypes).

    P starts as exp(S / eps) / sum, then each iteration divides every column by its sum times M
    and every row by its sum times R. The row step comes last, so the rows sum to 1/R exactly (to
    rounding) and the columns to 1/M approximately: the gap shrinks with each iteration (SwAV
    stops after 3). Computed in float64 (exp(S / eps) spans e^{+-1/eps}); returned in S's dtype.
    """
    rows, cols = scores.shape
    plan = torch.exp((scores.double() - scores.max().double()) / epsilon)
    plan /= plan.sum()
    for _ in range(iterations):
        plan /= plan.sum(0, keepdim=True) * cols
        plan /= plan.sum(1, keepdim=True) * rows
    return plan.to(scores.dtype)


@torch.no_grad()
def sinkhorn_targets(batch_scores: torch.Tensor, queue_scores: torch.Tensor, epsilon: float = 0.05,
                     iterations: int = 3) -> torch.Tensor:
    """Targets y (B, M), rows summing to 1, for the B batch rows, balanced together with the C
    queue rows (C may be 0): the batch rows of sinkhorn_knopp([queue; batch]) times C + B.
    With B = 0 there is nothing to assign: (0, M)."""
    if len(batch_scores) == 0:
        return batch_scores.clone()
    plan = sinkhorn_knopp(torch.cat([queue_scores, batch_scores]), epsilon, iterations)
    return plan[len(queue_scores):] * len(plan)
