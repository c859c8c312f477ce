from voxseg.models.backbones import minkunet  # noqa: F401  (registers the MinkUNet family)
