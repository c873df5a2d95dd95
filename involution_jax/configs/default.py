"""The embedded default: a small RedNet on scikit-learn's bundled digits (offline, CPU).

1,797 real 8x8 handwritten digits (shipped inside the scikit-learn wheel),
upsampled to 16x16 RGB; a fixed stratified split keeps 360 for testing. Trains
in about 25 s on a 2-core CPU (`make train`; the README's first command).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Model: the same RedNet module, with fewer / narrower stages and K=3.
  config.model = "rednet"
  config.model_kwargs = ml_collections.ConfigDict(
    dict(
      stage_sizes=(1, 1, 1),
      stem_width=32,
      base_width=16,
      kernel_size=3,
      group_channels=8,
      stem_kernel_size=3,
      stem_pool=False,
    )
  )
  # Weights to start from (checkpoint folder, .pth or .pdparams); dense models load
  # them into their backbone; parameters that do not fit (a head) stay initialised.
  config.init_from = ml_collections.config_dict.placeholder(str)
  config.init_partial = False  # True: allow init_from to fill only part of the backbone
  config.half_precision = False

  # Data.
  config.dataset = "digits"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.eval_split = "test"
  config.image_size = 16
  config.augment = "translate"
  config.augment_pad = 2
  config.eval_crop = 1.0
  config.mean = (127.5, 127.5, 127.5)
  config.std = (127.5, 127.5, 127.5)
  config.data_workers = 0
  config.prefetch_batches = 2  # batches prepared ahead, per worker: bounds host memory
  # Training stops when more of the examples drawn than this could not be read.
  config.max_unreadable_fraction = 0.1

  # Optimisation: the published recipe's shape, scaled down.
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_epochs = 20
  config.num_train_steps = -1  # > 0 overrides num_epochs
  config.optimizer = "sgd"
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.label_smoothing = 0.1
  config.warmup_epochs = 1.0
  config.warmup_init_factor = 0.25
  config.grad_accum_steps = 1

  # Bookkeeping.
  config.log_every_steps = 10
  config.eval_every_steps = 0  # 0: evaluate at the end only
  config.checkpoint_every_steps = 100
  config.keep_checkpoints = 2
  # Resume from this kept step instead of the newest (later ones are set aside as
  # <step>.superseded, not deleted): after a divergence, a step whose loss was sane.
  config.resume_step = ml_collections.config_dict.placeholder(int)
  config.seed = 0
  return config
