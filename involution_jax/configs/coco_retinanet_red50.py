"""RetinaNet with a RedNet-50-FPN on COCO, the 1x schedule (mmdet's recipe).

12 epochs at batch 16, SGD lr 0.01 (momentum 0.9, weight decay 1e-4), linear
warm-up over 2,000 iterations from 0.001 x lr, x0.1 at epochs 8 and 11; gradient
clipping at norm 40 with the involution neck, none with the conv neck (the official
configs); images fit into 800 x 1333 (padded), random flip.
Published box AP: 38.2 with the conv neck and with the involution neck. Needs
pycocotools (`pip install 'pycocotools>=2.0.8'`, or in the clone `pip install -e '.[coco]'`).

    --config coco_retinanet_red50:involution \
        --config.data_dir=/data/coco --config.init_from=rednet50_imagenet_ckpt/
"""

import ml_collections

from involution_jax.data import imagenet as imagenet_data

ITERATIONS_PER_EPOCH = 7330  # COCO train2017 at batch 16


def get_config(neck: str = "involution") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "detection"
  config.model = "retinanet"
  config.model_kwargs = ml_collections.ConfigDict(
    dict(neck=neck, backbone=dict(depth=50, stem_kernel_size=7))
  )
  config.init_from = ml_collections.config_dict.placeholder(str)
  # True: part of the backbone may load (the kernel-7 stem cannot take an ImageNet
  # RedNet's kernel-3 stem); what loaded is printed. False: every backbone array must.
  config.init_partial = True
  config.half_precision = False

  config.dataset = "coco"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  # COCO's 80 categories: checked against the data; what a dry run (--dry_run) builds
  # when the data is not on this machine.
  config.num_classes = 80
  config.train_split = "train2017"
  config.eval_split = "val2017"
  config.max_objects = 100
  config.image_size = (800, 1333)
  config.train_scale = (1.0, 1.0)
  config.flip = True
  config.mean = imagenet_data.MEAN
  config.std = imagenet_data.STD
  config.data_workers = 8
  config.prefetch_batches = 2  # batches prepared ahead, per worker: bounds host memory
  # Training stops when more of the examples drawn than this could not be read.
  config.max_unreadable_fraction = 0.1

  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_epochs = 12
  config.num_train_steps = -1
  config.optimizer = "sgd"
  config.learning_rate = 0.01
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 1e-4
  config.grad_clip_norm = 40.0 if neck == "involution" else 0.0
  config.schedule = "step"
  config.lr_step_epochs = (8, 11)
  config.warmup_epochs = 2000 / ITERATIONS_PER_EPOCH  # 2,000 iterations
  config.warmup_init_factor = 0.001
  config.grad_accum_steps = 1

  config.log_every_steps = 50
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3
  # Resume from this kept step instead of the newest (later ones are set aside as
  # <step>.superseded, not deleted): after a divergence, a step whose loss was sane.
  config.resume_step = ml_collections.config_dict.placeholder(int)
  config.seed = 0
  return config
