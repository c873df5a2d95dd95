"""Faster R-CNN with a RedNet-50-FPN on COCO, the 1x schedule (mmdet's recipe).

`coco_faster_rcnn_red50:VARIANT`, VARIANT the paper's neck/head: `conv_conv`,
`inv_conv` (involution FPN; published 40.2 box AP) or `inv_inv` (involution also
in the RPN head; 39.2); `coco_mask_rcnn_red50` adds the mask head. 12 epochs at
batch 16, SGD lr 0.02 (momentum 0.9, weight decay 1e-4), x0.1 at epochs 8 and 11;
linear warm-up from 0.001 x lr over 500 iterations (conv_conv, mmdet's 1x) or 2,000
(the involution variants, the official `schedule_1x_warmup`); gradient clipping at
norm 5 for inv_inv only, as the official configs; images fit into 800 x 1333
(padded), random flip. Needs pycocotools.

    --config coco_faster_rcnn_red50:inv_conv \
        --config.data_dir=/data/coco --config.init_from=rednet50_imagenet_ckpt/
"""

import ml_collections

from involution_jax.configs import coco_retinanet_red50

VARIANTS = {  # neck, head, warm-up iterations, gradient clipping norm (0: none)
  "conv_conv": ("conv", "conv", 500, 0.0),
  "inv_conv": ("involution", "conv", 2000, 0.0),
  "inv_inv": ("involution", "involution", 2000, 5.0),
}


def get_config(variant: str = "inv_conv", model: str = "faster_rcnn") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
  neck, head, warmup_iterations, grad_clip_norm = VARIANTS[variant]
  config = coco_retinanet_red50.get_config(neck)
  config.task = "two_stage_detection"
  config.model = model
  config.model_kwargs = ml_collections.ConfigDict(
    dict(neck=neck, head=head, backbone=dict(depth=50, stem_kernel_size=7))
  )
  config.learning_rate = 0.02
  config.warmup_epochs = warmup_iterations / coco_retinanet_red50.ITERATIONS_PER_EPOCH
  config.grad_clip_norm = grad_clip_norm
  return config
