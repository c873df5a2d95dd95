"""A byte-level language model on the interpreter's own documentation (offline, CPU).

`--config charlm:MIXER`, MIXER one of involution (default), dynamic, lightweight,
conv, attention: the same model and budget, differing in the token mixer alone,
at matched parameter counts (0.53-0.61M; attention has 3 blocks instead of 4).
Text: `pydoc_data.topics` (about 465k bytes; 90/5/5 contiguous split),
context 256; metrics in bits per byte.
"""

import ml_collections

from involution_jax.configs import default


def get_config(mixer: str = "involution") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.task = "language_model"
  config.model = "sequence"
  config.model_kwargs = ml_collections.ConfigDict(
    dict(
      mixer=mixer,
      width=128,
      depth=4,
      kernel_sizes=(3, 7, 15, 31),
      heads=8,
      group_channels=16,
      reduction_ratio=4,
      kernel_normalization=None,
      dropout=0.1,
      dropconnect=0.0,
      mlp_ratio=2,
      positions="rope",
      max_length=1024,
    )
  )
  if mixer == "attention":  # its projections hold 4 D^2 per block: 3 blocks match the others
    config.model_kwargs.depth = 3
    config.model_kwargs.kernel_sizes = (3, 7, 15)
  config.dataset = "pydoc"
  config.eval_split = "validation"
  config.context = 256
  config.num_classes = 256
  for field in ("image_size", "augment", "augment_pad", "eval_crop", "mean", "std"):
    del config[field]
  config.label_smoothing = 0.0

  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_epochs = 0
  config.num_train_steps = 2000
  config.optimizer = "adamw"
  config.learning_rate = 2e-3
  config.weight_decay = 0.01
  config.grad_clip_norm = 1.0
  # An epoch is one window per start position (~418k on pydoc): 0.008 is ~100 steps.
  config.warmup_epochs = 0.008
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
