from voxseg.models.heads import asis, semantic  # noqa: F401  (registers ASISHead, SemanticHead)
from voxseg.models.heads import probabilistic  # noqa: F401  (registers ProbabilisticEmbeddingHead)
from voxseg.models.heads import mpnet  # noqa: F401  (registers MPNetHead)
from voxseg.models.heads import grouping  # noqa: F401  (registers GroupingHead)
