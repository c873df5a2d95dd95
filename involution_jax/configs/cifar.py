"""CIFAR-style training with the involution kernel size as the ablation knob.

    --config cifar:3     # K = 3 (default 7)

RedNet-26 layout on 32x32 images (no stem pooling, so stages run at 16, 8, 4,
2); pad-4 random crop + flip; SGD 0.1, weight decay 5e-4, 200 epochs cosine.
The paper's ablation: larger K, fewer groups (more channels per group) and a
smaller reduction ratio each raise accuracy (also knobs: model_kwargs.
group_channels, model_kwargs.reduction_ratio). Needs `tfds:cifar10` prepared
as array_record in config.data_dir (or a folder of PNGs with dataset=folder).
"""

import ml_collections


def get_config(kernel_size: str = "7") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = "rednet26"
  config.model_kwargs = ml_collections.ConfigDict(
    dict(kernel_size=int(kernel_size), stem_pool=False, stem_kernel_size=3)
  )
  # Weights to start from (checkpoint folder, .pth or .pdparams); dense models load
  # them into their backbone; parameters that do not fit (a head) stay initialised.
  config.init_from = ml_collections.config_dict.placeholder(str)
  config.init_partial = False  # True: allow init_from to fill only part of the backbone
  config.half_precision = False

  config.dataset = "tfds:cifar10"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.num_classes = 10  # checked against the data; used by --dry_run without it
  config.eval_split = "test"
  config.image_size = 32
  config.augment = "pad_crop_flip"
  config.augment_pad = 4
  config.eval_crop = 1.0
  config.mean = (125.3, 123.0, 113.9)
  config.std = (63.0, 62.1, 66.7)
  config.data_workers = 4
  config.prefetch_batches = 2  # batches prepared ahead, per worker: bounds host memory
  # Training stops when more of the examples drawn than this could not be read.
  config.max_unreadable_fraction = 0.1

  config.batch_size = 128
  config.eval_batch_size = 512
  config.num_epochs = 200
  config.num_train_steps = -1
  config.optimizer = "sgd"
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 5e-4
  config.label_smoothing = 0.0
  config.warmup_epochs = 1.0
  config.warmup_init_factor = 0.1
  config.grad_accum_steps = 1

  config.log_every_steps = 50
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 2
  # Resume from this kept step instead of the newest (later ones are set aside as
  # <step>.superseded, not deleted): after a divergence, a step whose loss was sane.
  config.resume_step = ml_collections.config_dict.placeholder(int)
  config.seed = 0
  return config
