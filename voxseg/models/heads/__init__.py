from voxseg.models.heads import asis, semantic  # noqa: F401  (registers ASISHead, SemanticHead)
