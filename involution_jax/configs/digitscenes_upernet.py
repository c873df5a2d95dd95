"""UPerNet on digit scenes (offline): `digitscenes_seg`'s small RedNet and recipe, with the
UPerHead (pyramid pooling 1/2/3/6) and the auxiliary FCN head (weight 0.4) in
place of the FPN and Semantic FPN head."""

import ml_collections

from involution_jax.configs import digitscenes_seg


def get_config() -> ml_collections.ConfigDict:
  config = digitscenes_seg.get_config()
  backbone = config.model_kwargs.backbone
  config.model = "upernet"
  config.model_kwargs = ml_collections.ConfigDict(
    dict(backbone=backbone, channels=64, auxiliary_channels=32, dropout=0.1)
  )
  config.auxiliary_loss_weight = 0.4
  return config
