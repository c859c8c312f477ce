from voxseg.evaluation.asa import achievable_segmentation_accuracy
from voxseg.evaluation.instance import InstanceAP, InstanceCoverage
from voxseg.evaluation.panoptic import PanopticQuality
from voxseg.evaluation.panoptic_evaluator import (
    PanopticEvaluator,
    evaluate_panoptic_arrays,
    evaluate_panoptic_directories,
    format_instance_table,
    format_panoptic_table,
)
from voxseg.evaluation.semantic import (
    ConfusionMatrix,
    SemanticEvaluator,
    evaluate_arrays,
    evaluate_directories,
    format_table,
)

__all__ = ["ConfusionMatrix", "SemanticEvaluator", "evaluate_arrays", "evaluate_directories", "format_table",
           "PanopticQuality", "InstanceAP", "InstanceCoverage", "PanopticEvaluator", "evaluate_panoptic_arrays",
           "evaluate_panoptic_directories", "format_panoptic_table", "format_instance_table",
           "achievable_segmentation_accuracy"]
