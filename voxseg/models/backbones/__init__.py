from voxseg.models.backbones import minkunet  # noqa: F401  (registers the MinkUNet family)
from voxseg.models.backbones import grouping_minkunet  # noqa: F401  (registers GroupingMinkUNet14A)
