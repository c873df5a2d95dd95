"""Official RedNet weights <-> Flax variables.

* PyTorch / mmcls checkpoints (`backbone.*`, `head.fc.*`, optionally inside
  `{'state_dict': ..., 'meta': ...}`, `module.` prefixes tolerated):
  `from_torch_state_dict`, and back with `to_torch_state_dict`.
* PaddleClas `.pdparams` (a pickle of numpy arrays, read here without Paddle
  by a restricted unpickler, `paddle.load_pdparams`): `from_paddle_state_dict`.

Conversion is strict: every key the model needs must be there, with the right
shape, and nothing else (BatchNorm's `num_batches_tracked` may be present or
not; the model does not use it). Errors list every offending key.

Command line: ``involution-convert IN.{pth,pdparams} OUT_DIR`` (or ``python -m
involution_jax.convert``) writes a checkpoint that training, evaluation and
prediction load.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from involution_jax import checkpoints, cli, paddle
from involution_jax.data import imagenet
from involution_jax.models.rednet import STAGE_SIZES, RedNet

_TRACKED = "num_batches_tracked"
_STATS = {"running_mean": "mean", "running_var": "var"}


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


def _flax_to_torch_key(collection: str, path: tuple[str, ...]) -> str:
  """Flax (collection, path) -> mmcls key."""
  *module, leaf = path
  if module == ["fc"]:
    return f"head.fc.{leaf if leaf == 'bias' else 'weight'}"
  if collection == "batch_stats":
    leaf = {"mean": "running_mean", "var": "running_var"}[leaf]
  elif leaf in ("kernel", "scale"):
    leaf = "weight"
  return ".".join(["backbone", *_flax_module_to_torch(tuple(module)), leaf])


def _torch_to_flax_array(value: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
  """OIHW conv -> HWIO (or (I, O) for a 1x1 Dense); Linear (out, in) -> (in, out)."""
  if value.ndim == 4:
    value = value.transpose(2, 3, 1, 0)
    return value[0, 0] if len(target_shape) == 2 else value
  return value.T if value.ndim == 2 else value


def _flax_to_torch_array(value: np.ndarray, torch_ndim_is_conv: bool) -> np.ndarray:
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  if value.ndim == 2:
    return value.T[:, :, None, None] if torch_ndim_is_conv else value.T
  return value


# --- model inference from a state dict ---------------------------------------


def _strip(state_dict: Mapping[str, Any]) -> dict[str, Any]:
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
  state_dict = _strip(state_dict)
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


def _expected_torch_keys(model: RedNet) -> dict[str, tuple[str, tuple[str, ...], tuple]]:
  """torch key -> (collection, flax path, flax shape) for every variable of `model`."""
  expected = {}
  for collection, tree in variable_shapes(model).items():
    for path, leaf in traverse_util.flatten_dict(tree).items():
      expected[_flax_to_torch_key(collection, path)] = (collection, path, tuple(leaf.shape))
  return expected


def _listing(title: str, items: list[str], limit: int = 25) -> str:
  shown = "\n  ".join(items[:limit])
  more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
  return f"{title} ({len(items)}):\n  {shown}{more}"


def _torch_shape(flax_shape: tuple, key: str) -> tuple:
  if len(flax_shape) == 4:
    h, w, i, o = flax_shape
    return (o, i, h, w)
  if len(flax_shape) == 2:
    i, o = flax_shape
    return (o, i) if key.startswith("head.") else (o, i, 1, 1)
  return flax_shape


def from_torch_state_dict(
  state_dict: Mapping[str, Any], depth: int | None = None, **model_overrides
) -> dict:
  """Official mmcls RedNet weights -> {'params': ..., 'batch_stats': ...}.

  Args:
    state_dict: mapping of mmcls keys to tensors / arrays (torch tensors are
      fine), optionally wrapped as {'state_dict': ..., 'meta': ...}.
    depth: RedNet depth; inferred from the keys when None (and checked
      against them when given).
    **model_overrides: other `RedNet` fields (`stem_kernel_size`,
      `num_classes` are inferred likewise).

  Raises:
    ValueError: listing every missing, unexpected and wrongly shaped key.
  """
  return _convert(_strip(state_dict), depth, model_overrides, display=lambda key: key)


def _check_arrays(state_dict: dict, display) -> None:
  """Every value an array (numpy or torch) of floating point, all finite."""
  problems = []
  for key, value in state_dict.items():
    if key.endswith(_TRACKED):
      continue
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
      problems.append(f"{display(key)}: a {type(value).__name__}, expected an array")
      continue
    array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
      problems.append(f"{display(key)}: dtype {array.dtype}, expected floating point")
    elif not np.all(np.isfinite(array)):
      problems.append(f"{display(key)}: {int(np.sum(~np.isfinite(array)))} non-finite values")
  if problems:
    raise ValueError(_listing("unusable arrays", sorted(problems)))


def _convert(state_dict: dict, depth: int | None, model_overrides: dict, display) -> dict:
  """mmcls-named state dict -> Flax variables; `display` names keys in errors."""
  _check_arrays(state_dict, display)
  config = infer_model_config(state_dict)
  if depth is not None and depth != config["depth"]:
    raise ValueError(f"depth={depth} given, but the state dict is RedNet-{config['depth']}")
  config.update(model_overrides)
  expected = _expected_torch_keys(RedNet(**config))
  given = {k: v for k, v in state_dict.items() if not k.endswith(_TRACKED)}
  problems = []
  missing = sorted(map(display, set(expected) - set(given)))
  unexpected = sorted(map(display, set(given) - set(expected)))
  wrong = sorted(
    f"{display(k)}: got {tuple(np.shape(given[k]))}, expected {_torch_shape(expected[k][2], k)}"
    for k in set(expected) & set(given)
    if tuple(np.shape(given[k])) != _torch_shape(expected[k][2], k)
  )
  for title, items in (
    ("missing keys", missing),
    ("unexpected keys", unexpected),
    ("wrongly shaped keys", wrong),
  ):
    if items:
      problems.append(_listing(title, items))
  if problems:
    raise ValueError(f"state dict does not match RedNet({config}):\n" + "\n".join(problems))
  flat = {}
  for key, (collection, path, shape) in expected.items():
    value = given[key]
    value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    flat[(collection, *path)] = jnp.asarray(_torch_to_flax_array(value, shape))
  return traverse_util.unflatten_dict(flat)


def to_torch_state_dict(variables: Mapping[str, Any], num_batches_tracked: int = 0) -> dict:
  """Flax RedNet variables -> an mmcls state dict of torch tensors.

  Loads with `load_state_dict(strict=True)` into the official model; BatchNorm
  `num_batches_tracked` (not kept by Flax) is set to `num_batches_tracked`.
  """
  torch = _import_torch(".pth conversion")
  out = {}
  for (collection, *path), value in traverse_util.flatten_dict(
    {k: variables[k] for k in ("params", "batch_stats") if k in variables}
  ).items():
    key = _flax_to_torch_key(collection, tuple(path))
    array = _flax_to_torch_array(np.asarray(value), not key.startswith("head."))
    out[key] = torch.from_numpy(np.array(array))
    if key.endswith("running_var"):
      out[key[: -len("running_var")] + _TRACKED] = torch.tensor(num_batches_tracked)
  return out


# --- PaddleClas ----------------------------------------------------------------


def from_paddle_state_dict(
  state_dict: Mapping[str, Any], depth: int | None = None, **model_overrides
) -> dict:
  """PaddleClas RedNet weights ({name: array}) -> {'params': ..., 'batch_stats': ...}.

  Same strictness as `from_torch_state_dict`; errors name keys as Paddle does.
  """
  return _convert(
    paddle.as_torch_layout(state_dict), depth, model_overrides, display=paddle.paddle_key
  )


OFFICIAL_SUFFIXES = (".pth", ".pt", ".pdparams")


def load_official(path: str) -> tuple[dict, dict]:
  """Variables and RedNet config ({depth, stem_kernel_size, num_classes}) of a
  `.pth` (mmcls, read with `torch.load(weights_only=True)`) or `.pdparams` file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weights file not found: {path}")
  if path.endswith(".pdparams"):
    state, display = paddle.as_torch_layout(paddle.load_pdparams(path)), paddle.paddle_key
  elif path.endswith((".pth", ".pt")):
    torch = _import_torch("reading .pth files")
    try:
      loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # empty, truncated, not a checkpoint, or objects weights_only refuses
      raise ValueError(f"{path} is not a readable .pth checkpoint: {cli.one_line(e)}") from e
    if not isinstance(loaded, Mapping):
      raise ValueError(f"{path} holds a {type(loaded).__name__}, expected a dict of tensors")
    state, display = _strip(loaded), (lambda k: k)
  else:
    raise ValueError(f"unknown weights format {path!r}; expected one of {OFFICIAL_SUFFIXES}")
  try:
    return _convert(state, None, {}, display=display), infer_model_config(state)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None


def _import_torch(purpose: str):
  try:
    import torch
  except ImportError as e:
    raise ImportError(f"{purpose} needs PyTorch: pip install 'involution-jax[torch]'") from e
  return torch


def official_model_info(config: dict) -> dict:
  """Model info for converted official weights ({depth, stem_kernel_size, num_classes})."""
  num_classes = config["num_classes"]
  return dict(
    model=f"rednet{config['depth']}",
    model_kwargs=dict(stem_kernel_size=config["stem_kernel_size"]),
    num_classes=num_classes,
    class_names=list(imagenet.class_names())
    if num_classes == 1000
    else [str(i) for i in range(num_classes)],
    image_size=imagenet.IMAGE_SIZE,
    mean=list(imagenet.MEAN),
    std=list(imagenet.STD),
    eval_crop=imagenet.EVAL_CROP,
  )


def _replaceable(out_dir: str, overwrite: bool) -> None:
  """An existing non-empty OUT_DIR is removed only with --overwrite, and only if it is a
  checkpoint folder (numbered steps and nothing else)."""
  if not os.path.isdir(out_dir) or not os.listdir(out_dir):
    return
  if not overwrite:
    raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")
  if not all(e.is_dir() and e.name.split(".")[0].isdigit() for e in os.scandir(out_dir)):
    raise FileExistsError(f"{out_dir} holds other files than checkpoint steps; not replacing it")
  shutil.rmtree(out_dir)


@cli.command("involution-convert")
def main(argv: list[str] | None = None) -> int:
  """`involution-convert IN OUT_DIR`: official weights -> a Flax checkpoint folder."""
  parser = cli.parser(
    "involution-convert",
    "Convert official RedNet weights (.pth / .pdparams) to a Flax checkpoint that training "
    "(config.init_from), evaluation and prediction load.",
    [
      "involution-convert RedNet50_pretrained.pdparams checkpoints/rednet50",
      "involution-convert rednet50.pth checkpoints/rednet50",
    ],
  )
  parser.add_argument("weights", help="official mmcls .pth or PaddleClas .pdparams file")
  parser.add_argument("out_dir", help="output checkpoint folder (created)")
  parser.add_argument(
    "--overwrite", action="store_true", help="replace an existing checkpoint folder OUT_DIR"
  )
  args = parser.parse_args(argv)
  variables, config = load_official(args.weights)
  _replaceable(args.out_dir, args.overwrite)
  mngr = checkpoints.manager(cli.output_folder(args.out_dir, "output folder"), async_save=False)
  checkpoints.save(mngr, 0, variables=variables, model_info=official_model_info(config))
  mngr.close()
  print(
    f"RedNet-{config['depth']} (stem K={config['stem_kernel_size']}, "
    f"{config['num_classes']} classes) from {args.weights} -> {os.path.abspath(args.out_dir)}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
