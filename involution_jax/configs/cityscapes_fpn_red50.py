"""Semantic FPN with a RedNet-50 backbone on Cityscapes (mmseg's recipe).

80k iterations at batch 8 (2 per GPU x 4), 512 x 1024 random crops of images
rescaled by 0.5-2.0 (from 1024 x 2048) + flip; SGD lr 0.01, momentum 0.9, weight
decay 5e-4, poly decay (power 0.9) to 1e-4; evaluation on whole 1024 x 2048
images. Published: FPN conv neck 78.0 mIoU, involution neck 79.1.

    --config cityscapes_fpn_red50:involution \
        --config.data_dir=/data/cityscapes --config.init_from=rednet50_imagenet_ckpt/
"""

import ml_collections

from involution_jax.data import imagenet as imagenet_data


def get_config(neck: str = "involution") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "segmentation"
  config.model = "semantic_fpn"
  config.model_kwargs = ml_collections.ConfigDict(
    dict(neck=neck, backbone=dict(depth=50, stem_kernel_size=7))
  )
  # ImageNet-pretrained backbone (e.g. `involution-convert RedNet50.pdparams
  # DIR`); its kernel-3 stem involution does not fit the kernel-7 one and stays initialised.
  config.init_from = ml_collections.config_dict.placeholder(str)
  # True: part of the backbone may load (the kernel-7 stem cannot take an ImageNet
  # RedNet's kernel-3 stem); what loaded is printed. False: every backbone array must.
  config.init_partial = True
  config.half_precision = False

  config.dataset = "cityscapes"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  # Cityscapes' 19 train ids: checked against the data; what a dry run (--dry_run) builds
  # when the data is not on this machine.
  config.num_classes = 19
  config.train_split = "train"
  config.eval_split = "val"
  config.image_size = (1024, 2048)
  config.crop_size = (512, 1024)
  config.train_scale = (0.5, 2.0)
  config.flip = True
  config.mean = imagenet_data.MEAN
  config.std = imagenet_data.STD
  config.data_workers = 8
  config.prefetch_batches = 2  # batches prepared ahead, per worker: bounds host memory
  # Training stops when more of the examples drawn than this could not be read.
  config.max_unreadable_fraction = 0.1

  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_epochs = 0
  config.num_train_steps = 80_000
  config.optimizer = "sgd"
  config.learning_rate = 0.01
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 5e-4
  config.schedule = "poly"
  config.min_learning_rate = 1e-4
  config.warmup_epochs = 0.0
  config.warmup_init_factor = 1.0
  config.grad_accum_steps = 1

  config.log_every_steps = 50
  config.eval_every_steps = 8000
  config.checkpoint_every_steps = 4000
  config.keep_checkpoints = 3
  # Resume from this kept step instead of the newest (later ones are set aside as
  # <step>.superseded, not deleted): after a divergence, a step whose loss was sane.
  config.resume_step = ml_collections.config_dict.placeholder(int)
  config.seed = 0
  return config
