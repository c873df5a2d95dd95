"""Semantic segmentation of digit scenes (offline): a small RedNet-FPN, Semantic FPN head.

48 x 48 canvases with 1-4 scikit-learn digits of 12-20 pixels (11 classes:
background + 10 digits); validation scenes are drawn from held-out digits.
The ablation knob: `digitscenes_seg:conv` (3x3 conv FPN
outputs) or `:involution` (the paper's FPN_involution, default).
"""

import ml_collections


def get_config(neck: str = "involution") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "segmentation"
  config.model = "semantic_fpn"
  config.model_kwargs = ml_collections.ConfigDict(
    dict(
      neck=neck,
      neck_channels=64,
      head_channels=32,
      dropout=0.1,
      backbone=dict(
        stage_sizes=(1, 1, 1, 1),
        stem_width=32,
        base_width=16,
        kernel_size=3,
        group_channels=8,
        stem_kernel_size=3,
        stem_pool=True,
      ),
    )
  )
  # Weights to start from (checkpoint folder, .pth or .pdparams); dense models load
  # them into their backbone; parameters that do not fit (a head) stay initialised.
  config.init_from = ml_collections.config_dict.placeholder(str)
  config.init_partial = False  # True: allow init_from to fill only part of the backbone
  config.half_precision = False

  config.dataset = "digit_scenes"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.eval_split = "validation"
  config.num_train_scenes = 4000
  config.num_eval_scenes = 400
  config.scene_digit_sizes = (12, 20)
  config.max_objects = 4
  config.scene_seed = 0
  config.image_size = 48
  config.mean = (127.5, 127.5, 127.5)
  config.std = (127.5, 127.5, 127.5)
  config.flip = False  # digits are not symmetric
  config.data_workers = 0
  config.prefetch_batches = 2  # batches prepared ahead, per worker: bounds host memory
  # Training stops when more of the examples drawn than this could not be read.
  config.max_unreadable_fraction = 0.1

  config.batch_size = 32
  config.eval_batch_size = 80
  config.num_epochs = 16
  config.num_train_steps = -1
  config.optimizer = "sgd"
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.warmup_epochs = 1.0
  config.warmup_init_factor = 0.1
  config.grad_accum_steps = 1

  config.log_every_steps = 10
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 200
  config.keep_checkpoints = 2
  # Resume from this kept step instead of the newest (later ones are set aside as
  # <step>.superseded, not deleted): after a divergence, a step whose loss was sane.
  config.resume_step = ml_collections.config_dict.placeholder(int)
  config.seed = 0
  return config
