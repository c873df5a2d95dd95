"""The package's models as Flax NNX modules, holding the linen modules' very parameters.

    from flax import nnx
    from involution_jax import nnx as inv_nnx

    model = inv_nnx.rednet50(num_classes=10, rngs=nnx.Rngs(0))    # train mode, as nnx's own
    model = inv_nnx.from_weights("rednet50")                       # pretrained, eval mode
    logits = model(images)                                         # (B, H, W, 3) -> (B, classes)

Each module wraps the linen one with `flax.nnx.bridge.ToNNX`: the computation
is the linen module's, the variables live in the NNX module (`nnx.Param`,
BatchNorm's statistics as `nnx.BatchStat`), and `model.train()` /
`model.eval()` switch between batch statistics (updated in place, as
`nnx.BatchNorm` does) and running averages. `linen_variables` and
`set_variables` move variables between the two APIs, so checkpoints,
converted and pretrained weights load into either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx, traverse_util
from flax.nnx import bridge

from involution_jax import models
from involution_jax.tasks import task_named
from involution_jax.weights import load_weights, model_from_info

_BRIDGE_PRIVATE = ("to_nnx__", "_pytree__")


class Linen(nnx.Module):
  """A linen module of this package (called as `module(x, train)`) as an NNX module.

  Attributes:
    linen: the `bridge.ToNNX` wrapper holding the variables.
    use_running_average: eval mode (running BatchNorm statistics) when True;
      set by `model.eval()` / `model.train()`.
  """

  def __init__(
    self,
    module: nn.Module,
    sample_input: jax.Array,
    *,
    rngs: nnx.Rngs,
    use_running_average: bool = False,
  ):
    self.linen = bridge.ToNNX(module, rngs=rngs)
    # Jitted: the bridge's eager init runs a deep model op by op, many times slower.
    nnx.jit(_initialise)(self.linen, sample_input)
    self.use_running_average = use_running_average

  def __call__(self, x: jax.Array, train: bool | None = None) -> Any:
    """The linen module's output; `train` (default: not `use_running_average`) uses and
    updates batch statistics, as linen's `mutable=["batch_stats"]` does."""
    train = not self.use_running_average if train is None else train
    return self.linen(x, train=train, mutable=["batch_stats"] if train else False)


def _initialise(module: bridge.ToNNX, sample_input: jax.Array) -> None:
  bridge.lazy_init(module, sample_input, train=False)


def _attributes(model: Linen) -> dict:
  return {k: v for k, v in vars(model.linen).items() if not k.startswith(_BRIDGE_PRIVATE)}


def linen_variables(model: Linen) -> dict:
  """The model's variables as linen holds them: {'params': ..., 'batch_stats': ...}."""
  return bridge.variables.nnx_attrs_to_linen_vars(_attributes(model))


def set_variables(model: Linen, variables: Mapping[str, Any]) -> None:
  """Replaces the model's variables by linen `variables` of the same structure and shapes
  (cast to the model's dtypes). Raises ValueError listing every mismatch."""
  have = traverse_util.flatten_dict(linen_variables(model))
  given = traverse_util.flatten_dict(
    {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
  )
  problems = [f"missing {'/'.join(k)}" for k in sorted(set(have) - set(given))]
  problems += [f"unexpected {'/'.join(k)}" for k in sorted(set(given) - set(have))]
  problems += [
    f"{'/'.join(k)}: shape {tuple(jnp.shape(given[k]))}, expected {tuple(have[k].shape)}"
    for k in sorted(set(have) & set(given))
    if tuple(jnp.shape(given[k])) != tuple(have[k].shape)
  ]
  if problems:
    more = f"; ... {len(problems) - 10} more" if len(problems) > 10 else ""
    shown = "; ".join(problems[:10]) + more
    raise ValueError(f"variables do not fit this model ({len(problems)} problems): {shown}")
  attributes = _attributes(model)
  for (_, *path), value in given.items():
    node = attributes
    for key in path:
      node = node[key]
    node.set_value(jnp.asarray(value, have[(_, *path)].dtype))


def _sample_images(size: int = 64) -> jax.Array:
  return jnp.zeros((1, size, size, 3))


class Involution(Linen):
  """`models.Involution(**fields)` for inputs of `in_features` channels, as an NNX module.

  The number of spatial axes follows `kernel_size` (an int: 2-D; a tuple: its
  length), as in the linen layer: (B, *spatial, in_features) -> (B, *out_spatial,
  in_features).
  """

  def __init__(
    self, in_features: int, *, rngs: nnx.Rngs, use_running_average: bool = False, **fields
  ):
    kernel_size = fields.get("kernel_size", models.Involution.kernel_size)
    spatial = len(kernel_size) if isinstance(kernel_size, Sequence) else 2
    super().__init__(
      models.Involution(**fields),
      jnp.zeros((1, *(8,) * spatial, in_features)),
      rngs=rngs,
      use_running_average=use_running_average,
    )


class RedNet(Linen):
  """`models.RedNet(**fields)` as an NNX module: (B, H, W, 3) -> (B, num_classes) logits."""

  def __init__(self, *, rngs: nnx.Rngs, use_running_average: bool = False, **fields):
    super().__init__(
      models.RedNet(**fields), _sample_images(), rngs=rngs, use_running_average=use_running_average
    )


def rednet26(num_classes: int = 1000, *, rngs: nnx.Rngs, **fields) -> RedNet:
  """RedNet-26 as an NNX module; keyword arguments override `models.RedNet` fields."""
  return RedNet(depth=26, num_classes=num_classes, rngs=rngs, **fields)


def rednet38(num_classes: int = 1000, *, rngs: nnx.Rngs, **fields) -> RedNet:
  """RedNet-38 as an NNX module; keyword arguments override `models.RedNet` fields."""
  return RedNet(depth=38, num_classes=num_classes, rngs=rngs, **fields)


def rednet50(num_classes: int = 1000, *, rngs: nnx.Rngs, **fields) -> RedNet:
  """RedNet-50 as an NNX module; keyword arguments override `models.RedNet` fields."""
  return RedNet(depth=50, num_classes=num_classes, rngs=rngs, **fields)


def rednet101(num_classes: int = 1000, *, rngs: nnx.Rngs, **fields) -> RedNet:
  """RedNet-101 as an NNX module; keyword arguments override `models.RedNet` fields."""
  return RedNet(depth=101, num_classes=num_classes, rngs=rngs, **fields)


def rednet152(num_classes: int = 1000, *, rngs: nnx.Rngs, **fields) -> RedNet:
  """RedNet-152 as an NNX module; keyword arguments override `models.RedNet` fields."""
  return RedNet(depth=152, num_classes=num_classes, rngs=rngs, **fields)


def create_model(
  name: str,
  *,
  rngs: nnx.Rngs,
  use_running_average: bool = False,
  sample_size: int = 64,
  **fields,
) -> Linen:
  """A registry model (`models.MODELS`: the RedNets, "semantic_fpn", "retinanet") as an
  NNX module, initialised on a (1, sample_size, sample_size, 3) image."""
  return Linen(
    models.create_model(name, **fields),
    _sample_images(sample_size),
    rngs=rngs,
    use_running_average=use_running_average,
  )


def from_weights(source: str, dtype=None) -> Linen:
  """The model `source` holds, with its weights, as an NNX module in eval mode.

  `source`: whatever `weights.load_weights` reads: a training workdir or
  checkpoint folder, an official `.pth` / `.pdparams` / `.safetensors` file,
  or a pretrained name such as "rednet50". Call `.train()` to fine-tune.
  """
  variables, info = load_weights(source)
  module = model_from_info(info, dtype=dtype)
  given = task_named(info.task).serving_input(info)
  sample = jnp.zeros((1, *given.shape), given.dtype)
  # Initialised on abstract shapes only: the weights replace every value.
  model = nnx.eval_shape(lambda: Linen(module, sample, rngs=nnx.Rngs(0)))
  model.linen.to_nnx__rngs = nnx.Rngs(0)  # concrete keys (for dropout when fine-tuning)
  set_variables(model, variables)
  model.eval()
  return model
