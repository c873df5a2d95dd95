"""UPerNet with a RedNet-50 backbone on Cityscapes (mmseg's recipe; the paper's conv row).

As `cityscapes_fpn_red50` (80k iterations at batch 8, 512 x 1024 crops, SGD lr
0.01, poly decay), with the UPerHead (pyramid pooling 1/2/3/6, 512 channels) and
the auxiliary FCN head on stage 3 (weight 0.4). Published: 56.4M parameters,
80.6 mIoU.

    --config cityscapes_upernet_red50 \
        --config.data_dir=/data/cityscapes --config.init_from=rednet50_imagenet_ckpt/
"""

import ml_collections

from involution_jax.configs import cityscapes_fpn_red50


def get_config() -> ml_collections.ConfigDict:
  config = cityscapes_fpn_red50.get_config()
  config.model = "upernet"
  config.model_kwargs = ml_collections.ConfigDict(
    dict(backbone=dict(depth=50, stem_kernel_size=7), channels=512, auxiliary_channels=256)
  )
  config.auxiliary_loss_weight = 0.4
  return config
