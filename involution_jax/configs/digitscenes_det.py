"""Object detection in digit scenes (offline): RetinaNet on a small RedNet-FPN.

The scenes, data and schedule of `digitscenes_seg.py` (48 x 48 canvases with 1-4
scikit-learn digits of 12-20 pixels; validation scenes from held-out digits),
with 10 digit classes to box. Without the stem's max-pool the pyramid's strides
are 4..64, so the smallest anchors (16-25 px) fit the digits. The ablation knob:
`digitscenes_det.py:conv` or `:involution` (default). Evaluation: COCO AP and
AP50 (pycocotools).
"""

import ml_collections

from involution_jax.configs import digitscenes_seg


def get_config(neck: str = "involution") -> ml_collections.ConfigDict:
  config = digitscenes_seg.get_config(neck)
  config.task = "detection"
  config.model = "retinanet"
  config.model_kwargs = ml_collections.ConfigDict(
    dict(
      neck=neck,
      neck_channels=64,
      head_channels=64,
      stacked_convs=2,
      backbone=dict(
        stage_sizes=(1, 1, 1, 1),
        stem_width=32,
        base_width=16,
        kernel_size=3,
        group_channels=8,
        stem_kernel_size=3,
        stem_pool=False,
      ),
    )
  )
  config.learning_rate = 0.01
  config.grad_clip_norm = 35.0  # as mmdet's RetinaNet
  config.checkpoint_every_steps = 250
  return config
