"""Loss terms, selected by name in YAML (`model.losses.<name>`) and weighted by the model.

A loss is called with the heads' outputs ({head name: {key: tensor}}) and the batch, and returns
a scalar tensor. One module per head family, as voxseg.models.heads:

    semantic       CrossEntropyLoss
    asis           DiscriminativeLoss
    probabilistic  ProbabilisticInstanceLoss, CenterAwareScoreLoss, EntropyRegularizer
    mpnet          SemanticMemoryRegularizer, InstanceCentroidRegularizer
    dpgnet         CliqueReconstructionLoss, CliqueAffinityLoss

The stuff rule the instance losses share is voxseg.models.losses.instance_targets. Importing
this package registers the losses in voxseg.registry.LOSSES.
"""

from voxseg.models.losses import asis, dpgnet, mpnet, probabilistic, semantic  # noqa: F401  (register them)
