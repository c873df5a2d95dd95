"""Flax (linen) models: layers, RedNet, FPN necks, dense heads, sequence models, the registry.

- `involution`: the involution layer (1-3 dimensions, causal, decoding).
- `layers`: the PyTorch-exact pieces it and RedNet need (BatchNorm, convs, pools).
- `rednet`: RedNet-26 ... -152 (`rednet50()`, ...), classifiers and backbones.
- `fpn`: the FPN neck (conv or involution) on a RedNet backbone.
- `detection`: RetinaNet with anchors, box coding, losses, NMS.
- `segmentation`: Semantic FPN with its loss and mIoU.
- `upernet`: UPerNet (pyramid pooling + FPN fusion, auxiliary FCN head).
- `mixers`, `sequence`: token mixers (involution, DynamicConv, LightConv, conv,
  attention) and the sequence model built on them, with `generate`.
- `registry`: `create_model(name, **fields)` for configs and checkpoints.
"""

from involution_jax.models.involution import Involution
from involution_jax.models.rednet import RedNet, rednet26, rednet38, rednet50, rednet101, rednet152
from involution_jax.models.registry import MODELS, create_model

__all__ = [
  "MODELS",
  "Involution",
  "RedNet",
  "create_model",
  "rednet26",
  "rednet38",
  "rednet50",
  "rednet101",
  "rednet152",
]
