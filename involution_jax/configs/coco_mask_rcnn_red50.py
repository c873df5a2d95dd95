"""Mask R-CNN with a RedNet-50-FPN on COCO, the 1x schedule (mmdet's recipe).

`coco_mask_rcnn_red50:VARIANT`, VARIANT the paper's neck/head: `conv_conv` (published
39.9 box AP, 35.7 mask AP), `inv_conv` (involution FPN: 40.8 / 36.4, the best) or
`inv_inv` (involution also in the RPN head and the mask head's four convs: 39.6 /
35.1). The recipe of `coco_faster_rcnn_red50`; evaluation adds COCO mask AP.

    --config coco_mask_rcnn_red50:inv_conv \
        --config.data_dir=/data/coco --config.init_from=rednet50_imagenet_ckpt/
"""

import ml_collections

from involution_jax.configs import coco_faster_rcnn_red50


def get_config(variant: str = "inv_conv") -> ml_collections.ConfigDict:
  return coco_faster_rcnn_red50.get_config(variant, model="mask_rcnn")
