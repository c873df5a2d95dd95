"""Faster / Mask R-CNN in digit scenes (offline) on a small RedNet-FPN.

`digitscenes_rcnn:MODEL_PARTS`: MODEL `faster` or `mask`, PARTS `conv` (conv/conv:
3x3 convs in the FPN, the RPN head and the mask head) or `inv` (inv/inv: involutions
there), e.g. `digitscenes_rcnn:mask_inv` (default). The scenes, split and schedule of
`digitscenes_det` (48 x 48 canvases with 1-4 digits of 12-20 pixels, held-out
digits for validation), each digit's own mask for Mask R-CNN. Evaluation: COCO
box AP and mask AP (pycocotools).
"""

import ml_collections

from involution_jax.configs import digitscenes_det

MODELS = {"faster": "faster_rcnn", "mask": "mask_rcnn"}
PARTS = {"conv": "conv", "inv": "involution"}


def get_config(variant: str = "mask_inv") -> ml_collections.ConfigDict:
  model, _, parts = variant.partition("_")
  if model not in MODELS or parts not in PARTS:
    raise ValueError(
      f"digitscenes_rcnn variant {variant!r}: expected MODEL_PARTS with MODEL in "
      f"{sorted(MODELS)} and PARTS in {sorted(PARTS)}, e.g. 'mask_inv'"
    )
  config = digitscenes_det.get_config(PARTS[parts])
  backbone = config.model_kwargs.backbone
  config.task = "two_stage_detection"
  config.model = MODELS[model]
  config.model_kwargs = ml_collections.ConfigDict(
    dict(
      neck=PARTS[parts],
      head=PARTS[parts],
      neck_channels=64,
      fc_channels=256,
      train_proposals=256,
      roi_samples=128,  # at most 4 digits a scene: 32 positives are plenty
      mask_rois=16,
      test_proposals=100,
      max_detections=20,
      backbone=backbone,
    )
  )
  config.learning_rate = 0.02
  return config
