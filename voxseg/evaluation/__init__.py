from voxseg.evaluation.semantic import (
    ConfusionMatrix,
    SemanticEvaluator,
    evaluate_arrays,
    evaluate_directories,
    format_table,
)

__all__ = ["ConfusionMatrix", "SemanticEvaluator", "evaluate_arrays", "evaluate_directories", "format_table"]
