from voxseg.models.heads import asis, semantic  # noqa: F401  (registers ASISHead, SemanticHead)
from voxseg.models.heads import probabilistic  # noqa: F401  (registers ProbabilisticEmbeddingHead)
