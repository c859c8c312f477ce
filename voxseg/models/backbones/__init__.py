# registers DPGNetMinkUNet14A and the MinkUNet family
from voxseg.models.backbones import dpgnet_minkunet, minkunet  # noqa: F401
