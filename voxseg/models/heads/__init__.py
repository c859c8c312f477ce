# Importing each module registers its heads: ASISHead, SemanticHead, DPGNetHead, MPNetHead,
# ProbabilisticEmbeddingHead.
from voxseg.models.heads import asis, dpgnet, mpnet, probabilistic, semantic  # noqa: F401
