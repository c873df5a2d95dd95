"""The official (mmcls / PyTorch) RedNet names and layouts, and Flax's.

mmcls keys are `backbone.stem.0.conv.weight`, `backbone.layer1.0.conv2...`,
`head.fc.*`, with OIHW conv weights, (out, in) linear weights and BatchNorm's
`running_mean` / `running_var` / `num_batches_tracked`. This module maps keys
and arrays both ways and infers a RedNet's config from a state dict; `convert`
checks and converts, `paddle` maps PaddleClas's names onto these.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from involution_jax.models.rednet import STAGE_SIZES, RedNet

TRACKED = "num_batches_tracked"


# --- key mapping -------------------------------------------------------------


def _torch_module_to_flax(parts: list[str]) -> tuple[str, ...]:
  """['stem', '0', 'conv'] -> ('stem_0', 'conv'); downsample.0/.1 -> conv/bn."""
  out = []
  i = 0
  while i < len(parts):
    part = parts[i]
    if (part == "stem" or re.fullmatch(r"layer\d+", part)) and i + 1 < len(parts):
      out.append(f"{part}_{parts[i + 1]}")
      i += 2
    elif part == "downsample" and i + 1 < len(parts):
      out += ["downsample", {"0": "conv", "1": "bn"}.get(parts[i + 1], parts[i + 1])]
      i += 2
    else:
      out.append(part)
      i += 1
  return tuple(out)


def _flax_module_to_torch(path: tuple[str, ...]) -> list[str]:
  out = []
  for i, name in enumerate(path):
    match = re.fullmatch(r"(stem|layer\d+)_(\d+)", name)
    if match:
      out += list(match.groups())
    elif i > 0 and path[i - 1] == "downsample":
      out.append({"conv": "0", "bn": "1"}[name])
    else:
      out.append(name)
  return out


def flax_to_torch_key(collection: str, path: tuple[str, ...]) -> str:
  """Flax (collection, path) -> mmcls key."""
  *module, leaf = path
  if module == ["fc"]:
    return f"head.fc.{leaf if leaf == 'bias' else 'weight'}"
  if collection == "batch_stats":
    leaf = {"mean": "running_mean", "var": "running_var"}[leaf]
  elif leaf in ("kernel", "scale"):
    leaf = "weight"
  return ".".join(["backbone", *_flax_module_to_torch(tuple(module)), leaf])


def torch_to_flax_array(value: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
  """OIHW conv -> HWIO (or (I, O) for a 1x1 Dense); Linear (out, in) -> (in, out)."""
  if value.ndim == 4:
    value = value.transpose(2, 3, 1, 0)
    return value[0, 0] if len(target_shape) == 2 else value
  return value.T if value.ndim == 2 else value


def flax_to_torch_array(value: np.ndarray, torch_ndim_is_conv: bool) -> np.ndarray:
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  if value.ndim == 2:
    return value.T[:, :, None, None] if torch_ndim_is_conv else value.T
  return value


# --- model inference from a state dict ---------------------------------------


def strip(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Unwraps {'state_dict': ...} and drops `module.` prefixes."""
  if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
    state_dict = state_dict["state_dict"]
  out = {}
  for key, value in state_dict.items():
    while key.startswith("module."):
      key = key[len("module.") :]
    out[key] = value
  return out


def infer_model_config(state_dict: Mapping[str, Any]) -> dict[str, int]:
  """depth, stem_kernel_size and num_classes of an mmcls RedNet state dict."""
  state_dict = strip(state_dict)
  blocks = {}
  for key in state_dict:
    match = re.match(r"backbone\.layer(\d+)\.(\d+)\.", key)
    if match:
      stage, block = int(match[1]), int(match[2])
      blocks[stage] = max(blocks.get(stage, 0), block + 1)
  sizes = tuple(blocks.get(s, 0) for s in range(1, 5))
  depth = next((d for d, s in STAGE_SIZES.items() if s == sizes), None)
  if depth is None:
    raise ValueError(
      f"cannot infer the RedNet depth: blocks per stage {sizes} match none of {STAGE_SIZES}"
    )
  try:
    stem_out = np.shape(state_dict["backbone.stem.0.conv.weight"])[0]
    taps = np.shape(state_dict["backbone.stem.1.conv2.conv.weight"])[0] // (stem_out // 16)
  except KeyError as e:
    raise ValueError(f"cannot infer the stem kernel size: missing key {e}") from None
  head = state_dict.get("head.fc.weight")
  return dict(
    depth=depth,
    stem_kernel_size=math.isqrt(taps),
    num_classes=0 if head is None else int(np.shape(head)[0]),
  )


def variable_shapes(model: RedNet) -> dict:
  """{'params': ..., 'batch_stats': ...} of ShapeDtypeStructs, without computing."""
  return jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False)
  )


def expected_keys(model: RedNet) -> dict[str, tuple[str, tuple[str, ...], tuple]]:
  """torch key -> (collection, flax path, flax shape) for every variable of `model`."""
  expected = {}
  for collection, tree in variable_shapes(model).items():
    for path, leaf in traverse_util.flatten_dict(tree).items():
      expected[flax_to_torch_key(collection, path)] = (collection, path, tuple(leaf.shape))
  return expected


def torch_shape(flax_shape: tuple, key: str) -> tuple:
  if len(flax_shape) == 4:
    h, w, i, o = flax_shape
    return (o, i, h, w)
  if len(flax_shape) == 2:
    i, o = flax_shape
    return (o, i) if key.startswith("head.") else (o, i, 1, 1)
  return flax_shape


def from_flax(variables: Mapping[str, Any], num_batches_tracked: int = 0) -> dict:
  """Flax RedNet variables -> an mmcls state dict of numpy arrays (OIHW convs, (out, in)
  linear weights); BatchNorm `num_batches_tracked` (not kept by Flax) is set to
  `num_batches_tracked` (int64)."""
  out = {}
  for (collection, *path), value in traverse_util.flatten_dict(
    {k: variables[k] for k in ("params", "batch_stats") if k in variables}
  ).items():
    key = flax_to_torch_key(collection, tuple(path))
    array = flax_to_torch_array(np.asarray(value), not key.startswith("head."))
    out[key] = np.array(array, order="C")  # writable (torch) and C-ordered (safetensors)
    if key.endswith("running_var"):
      out[key[: -len("running_var")] + TRACKED] = np.array(num_batches_tracked, np.int64)
  return out
