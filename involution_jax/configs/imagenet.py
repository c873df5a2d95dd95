"""RedNet on ImageNet, the published recipe (official README, results.md).

SGD with Nesterov momentum 0.9, lr 0.1 per 256 images (scaled linearly with
batch_size), weight decay 1e-4 on all parameters, 130 epochs: linear warm-up
over 5 epochs from 0.25 x lr, then cosine to 0; label smoothing 0.1;
RandomResizedCrop 224 + flip for training, short side 256 -> centre 224 for
evaluation. Published top-1: RedNet-26/38/50/101/152 75.96 / 77.48 / 78.35 /
78.92 / 79.12.

    --config imagenet:rednet101   (or rednet101_imagenet)

Data: TFDS `imagenet2012` prepared as array_record (default), or an image
folder: --config.dataset=folder --config.data_dir=/data/imagenet
(train/<class>/*.JPEG and val/<class>/*.JPEG).
"""

import ml_collections

from involution_jax.data import imagenet as imagenet_data


def get_config(model: str = "rednet50") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model
  config.model_kwargs = ml_collections.ConfigDict()
  # Weights to start from (checkpoint folder, .pth or .pdparams); dense models load
  # them into their backbone; parameters that do not fit (a head) stay initialised.
  config.init_from = ml_collections.config_dict.placeholder(str)
  config.init_partial = False  # True: allow init_from to fill only part of the backbone
  config.half_precision = False  # True: bfloat16 compute (TPU / recent GPUs)

  config.dataset = "tfds:imagenet2012"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  # ImageNet-1k: checked against the data; what a dry run (--dry_run) builds
  # when the data is not on this machine.
  config.num_classes = 1000
  config.eval_split = "validation"
  config.image_size = imagenet_data.IMAGE_SIZE
  config.augment = "inception"
  config.eval_crop = imagenet_data.EVAL_CROP
  config.mean = imagenet_data.MEAN
  config.std = imagenet_data.STD
  config.data_workers = 16
  config.prefetch_batches = 2  # batches prepared ahead, per worker: bounds host memory
  # Training stops when more of the examples drawn than this could not be read.
  config.max_unreadable_fraction = 0.1

  config.batch_size = 1024  # global, over all devices of all hosts
  config.eval_batch_size = 1024
  config.num_epochs = 130
  config.num_train_steps = -1
  config.optimizer = "sgd"
  # Follows batch_size overrides (a lazy reference); set it to fix the value.
  config.learning_rate = config.get_ref("batch_size") * (0.1 / 256)
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.label_smoothing = 0.1
  config.warmup_epochs = 5.0
  config.warmup_init_factor = 0.25
  config.grad_accum_steps = 1

  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3
  # Resume from this kept step instead of the newest (later ones are set aside as
  # <step>.superseded, not deleted): after a divergence, a step whose loss was sane.
  config.resume_step = ml_collections.config_dict.placeholder(int)
  config.seed = 0
  return config
