"""Pretrained RedNets in one line: `model, variables = pretrained.load("rednet50")`.

The weights are PaddleClas's released ImageNet files (`zoo.REGISTRY` lists the
names, sizes and published top-1), downloaded once into the cache folder
(`$INVOLUTION_JAX_CACHE`, default `~/.cache/involution_jax`), checked on every
later load, and converted strictly. The same names work wherever a weights
path does: `involution-predict rednet50 photo.jpg`, `involution-eval
rednet50`, `config.init_from = "rednet50"`.
"""

from __future__ import annotations

from involution_jax.models.rednet import RedNet
from involution_jax.weights import convert, zoo

REGISTRY = zoo.REGISTRY


def names() -> tuple[str, ...]:
  """The names `load` takes: ("rednet26", "rednet38", "rednet50", "rednet101", "rednet152")."""
  return tuple(REGISTRY)


def load(name: str, dtype=None, **fetch_kwargs) -> tuple[RedNet, dict]:
  """(model, variables) of a pretrained RedNet, e.g. `load("rednet50")`.

  The model maps (B, H, W, 3) images, normalised with ImageNet's mean and std
  (`involution_jax.data.imagenet`; 224 x 224 as published), to (B, 1000)
  logits: `model.apply(variables, x, train=False)`. `dtype` is the compute
  dtype (e.g. jnp.bfloat16); `fetch_kwargs` go to `zoo.fetch` (`timeout`,
  `retries`, `quiet`).

  Raises:
    ValueError: an unknown name, or a downloaded file that is not the RedNet it should be.
    zoo.DownloadError: the file could not be fetched (the message names the URL
      and where a file downloaded by hand is picked up).
  """
  variables, config = convert.load_pretrained(name, **fetch_kwargs)
  return RedNet(**config, **({} if dtype is None else dict(dtype=dtype))), variables
