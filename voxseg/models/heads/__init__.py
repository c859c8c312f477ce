from voxseg.models.heads import semantic  # noqa: F401  (registers SemanticHead)
