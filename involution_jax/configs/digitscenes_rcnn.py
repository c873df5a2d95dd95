"""Faster / Mask R-CNN in digit scenes (offline) on a small RedNet-FPN.

`digitscenes_rcnn:MODEL_PARTS`: MODEL `faster` or `mask`, PARTS `conv` (conv/conv:
3x3 convs in the FPN, the RPN head and the mask head), `inv` (inv/inv: involutions
there, as the paper) or, for `mask` only, `inv_softmax` (inv/inv with the mask
head's involution kernels softmax-normalised over their taps, not in the paper:
the paper's unnormalised four-involution mask head collapses here, see README),
e.g. `digitscenes_rcnn:mask_inv` (default). The scenes and split of
`digitscenes_det` (48 x 48 canvases with 1-4 digits of 12-20 pixels, held-out
digits for validation), each digit's own mask for Mask R-CNN. One recipe for every
variant, the official inv/inv one shortened: 600 steps at batch 8, SGD lr 0.02,
warm-up from 0.001 x lr over 100 steps, gradient clipping at norm 5 (about 2 min
for Faster R-CNN, 8 for Mask R-CNN on 2 CPU cores). Evaluation: COCO box AP and
mask AP (pycocotools).
"""

import ml_collections

from involution_jax.configs import digitscenes_det

MODELS = {"faster": "faster_rcnn", "mask": "mask_rcnn"}
PARTS = {  # neck and head, mask kernel normalisation
  "conv": ("conv", None),
  "inv": ("involution", None),
  "inv_softmax": ("involution", "softmax"),
}


def get_config(variant: str = "mask_inv") -> ml_collections.ConfigDict:
  model, _, parts = variant.partition("_")
  if model not in MODELS or parts not in PARTS or (model, parts) == ("faster", "inv_softmax"):
    raise ValueError(
      f"digitscenes_rcnn variant {variant!r}: expected MODEL_PARTS with MODEL in "
      f"{sorted(MODELS)} and PARTS in {sorted(PARTS)} (inv_softmax for mask only), "
      "e.g. 'mask_inv'"
    )
  mixer, mask_kernel_normalization = PARTS[parts]
  config = digitscenes_det.get_config(mixer)
  backbone = config.model_kwargs.backbone
  config.task = "two_stage_detection"
  config.model = MODELS[model]
  config.model_kwargs = ml_collections.ConfigDict(
    dict(
      neck=mixer,
      head=mixer,
      neck_channels=64,
      fc_channels=256,
      train_proposals=256,
      roi_samples=128,  # at most 4 digits a scene: 32 positives are plenty
      mask_rois=8,  # positives first: the mask head's cost is per slot
      test_proposals=100,
      max_detections=20,
      backbone=backbone,
    )
  )
  if mask_kernel_normalization is not None:
    config.model_kwargs.mask_kernel_normalization = mask_kernel_normalization
  config.batch_size = 8
  config.num_train_steps = 600
  config.learning_rate = 0.02
  config.warmup_epochs = 100 / (config.num_train_scenes / config.batch_size)  # 100 steps
  config.warmup_init_factor = 0.001
  config.grad_clip_norm = 5.0
  config.checkpoint_every_steps = 200
  return config
