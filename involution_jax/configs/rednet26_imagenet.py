"""RedNet-26 on ImageNet with the published recipe (see imagenet.py)."""

import ml_collections

from involution_jax.configs import imagenet


def get_config() -> ml_collections.ConfigDict:
  return imagenet.get_config("rednet26")
