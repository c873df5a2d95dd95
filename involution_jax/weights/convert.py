"""RedNet weights in every form <-> Flax variables.

* PyTorch / mmcls checkpoints (`backbone.*`, `head.fc.*`, optionally inside
  `{'state_dict': ..., 'meta': ...}`, `module.` prefixes tolerated; names and
  layouts in `mmcls`): `from_torch_state_dict`, and back with
  `to_torch_state_dict`; `.safetensors` files with the same names.
* PaddleClas `.pdparams` (a pickle of numpy arrays, read here without Paddle
  by a restricted unpickler, `paddle.load_pdparams`): `from_paddle_state_dict`.
* Pretrained names (`zoo.REGISTRY`, e.g. "rednet50"): `load_pretrained`.
* Anything of these or a training checkpoint: `load_weights`, the one loader
  every tool uses; and out again with `write_weights`.

Conversion is strict: every key the model needs must be there, with the right
shape, and nothing else (BatchNorm's `num_batches_tracked` may be present or
not; the model does not use it). Errors list every offending key.

Command line: ``involution-convert IN OUT [--format orbax|torch|safetensors]``
(`cli.convert`): official weights or a pretrained
name to a checkpoint that training, evaluation and prediction load, or a
checkpoint out to the official layout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from involution_jax.data import imagenet
from involution_jax.host.console import one_line, progress
from involution_jax.host.paths import output_file, output_folder
from involution_jax.models.rednet import RedNet
from involution_jax.weights import checkpoints, mmcls, paddle, zoo
from involution_jax.weights.info import ModelInfo


def _listing(title: str, items: list[str], limit: int = 25) -> str:
  shown = "\n  ".join(items[:limit])
  more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
  return f"{title} ({len(items)}):\n  {shown}{more}"


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
  return _convert(mmcls.strip(state_dict), depth, model_overrides, display=lambda key: key)


def _check_arrays(state_dict: dict, display) -> None:
  """Every value an array (numpy or torch) of floating point, all finite."""
  problems = []
  for key, value in state_dict.items():
    if key.endswith(mmcls.TRACKED):
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


def _convert(
  state_dict: dict, depth: int | None, model_overrides: dict, display, quiet: bool = False
) -> dict:
  """mmcls-named state dict -> Flax variables; `display` names keys in errors."""
  _check_arrays(state_dict, display)
  config = mmcls.infer_model_config(state_dict)
  if depth is not None and depth != config["depth"]:
    raise ValueError(f"depth={depth} given, but the state dict is RedNet-{config['depth']}")
  config.update(model_overrides)
  expected = mmcls.expected_keys(RedNet(**config))
  given = {k: v for k, v in state_dict.items() if not k.endswith(mmcls.TRACKED)}
  problems = []
  missing = sorted(map(display, set(expected) - set(given)))
  unexpected = sorted(map(display, set(given) - set(expected)))
  wrong = sorted(
    f"{display(k)}: got {tuple(np.shape(given[k]))}, expected {shape}"
    for k in set(expected) & set(given)
    if tuple(np.shape(given[k])) != (shape := mmcls.torch_shape(expected[k][2], k))
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
  for key, (collection, path, shape) in progress(
    expected.items(), total=len(expected), desc="convert", unit="array", leave=False, quiet=quiet
  ):
    value = given[key]
    value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    flat[(collection, *path)] = jnp.asarray(mmcls.torch_to_flax_array(value, shape))
  return traverse_util.unflatten_dict(flat)


def to_torch_state_dict(variables: Mapping[str, Any], num_batches_tracked: int = 0) -> dict:
  """Flax RedNet variables -> an mmcls state dict of torch tensors.

  Loads with `load_state_dict(strict=True)` into the official model.
  """
  torch = _import_torch(".pth conversion")
  return {
    k: torch.from_numpy(v) for k, v in mmcls.from_flax(variables, num_batches_tracked).items()
  }


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


OFFICIAL_SUFFIXES = (".pth", ".pt", ".pdparams", ".safetensors")


def _read_state_dict(path: str) -> tuple[dict, Any]:
  """(mmcls-named state dict, key display for errors) of an official weights file."""
  if path.endswith(".pdparams"):
    return paddle.as_torch_layout(paddle.load_pdparams(path)), paddle.paddle_key
  if path.endswith(".safetensors"):
    safetensors_numpy = _import_safetensors("reading .safetensors files")
    try:
      return mmcls.strip(safetensors_numpy.load_file(path)), (lambda k: k)
    except Exception as e:  # truncated, or not a safetensors file at all
      raise ValueError(f"{path} is not a readable .safetensors file: {one_line(e)}") from e
  if path.endswith((".pth", ".pt")):
    torch = _import_torch("reading .pth files")
    try:
      loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # empty, truncated, not a checkpoint, or objects weights_only refuses
      raise ValueError(f"{path} is not a readable .pth checkpoint: {one_line(e)}") from e
    if not isinstance(loaded, Mapping):
      raise ValueError(f"{path} holds a {type(loaded).__name__}, expected a dict of tensors")
    return mmcls.strip(loaded), (lambda k: k)
  raise ValueError(f"unknown weights format {path!r}; expected one of {OFFICIAL_SUFFIXES}")


def load_official(path: str, depth: int | None = None, quiet: bool = False) -> tuple[dict, dict]:
  """Variables and RedNet config ({depth, stem_kernel_size, num_classes}) of a `.pth`
  (mmcls, read with `torch.load(weights_only=True)`), `.pdparams` or `.safetensors`
  (mmcls names, as `involution-convert --format safetensors` writes) file.

  `depth`, when given, must be the file's (a RedNet-26 file never loads as RedNet-50).
  `quiet`: no progress bar (there is none either when stderr is not a terminal).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weights file not found: {path}")
  state, display = _read_state_dict(path)
  try:
    variables = _convert(state, depth, {}, display=display, quiet=quiet)
    return variables, mmcls.infer_model_config(state)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None


def load_pretrained(name: str, quiet: bool = False, **fetch_kwargs) -> tuple[dict, dict]:
  """`load_official` of a `zoo` name's weights, fetched (once) by `zoo.fetch(name,
  **fetch_kwargs)`; the file must hold the depth its name says."""
  path = zoo.fetch(name, quiet=quiet, **fetch_kwargs)
  return load_official(path, depth=zoo.REGISTRY[name].depth, quiet=quiet)


def _import_torch(purpose: str):
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      f"{purpose} needs PyTorch: pip install torch==2.13.0 "
      "(or, in the clone: pip install -e '.[torch]')"
    ) from e
  return torch


def _import_safetensors(purpose: str):
  try:
    import safetensors.numpy
  except ImportError as e:
    raise ImportError(
      f"{purpose} needs safetensors: pip install 'safetensors>=0.4' "
      "(or, in the clone: pip install -e '.[safetensors]')"
    ) from e
  return safetensors.numpy


def official_model_info(config: dict) -> ModelInfo:
  """Model info for converted official weights ({depth, stem_kernel_size, num_classes})."""
  num_classes = config["num_classes"]
  return ModelInfo(
    model=f"rednet{config['depth']}",
    model_kwargs=dict(stem_kernel_size=config["stem_kernel_size"]),
    num_classes=num_classes,
    class_names=imagenet.class_names()
    if num_classes == 1000
    else tuple(str(i) for i in range(num_classes)),
    image_size=imagenet.IMAGE_SIZE,
    mean=imagenet.MEAN,
    std=imagenet.STD,
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


def paths_read(source: str) -> list[str]:
  """The files or folders `load_weights(source)` reads that exist (a checkpoint source:
  also its checkpoint root; a pretrained name: its cached file), for commands that must
  not write over them."""
  if zoo.is_name(source) and not os.path.exists(source):
    return [path for path in [zoo.cached_path(source)] if os.path.exists(path)]
  paths = [source] if os.path.exists(source) else []
  if paths and not source.endswith(OFFICIAL_SUFFIXES):
    with contextlib.suppress(FileNotFoundError):  # load_weights names what is missing
      paths.append(checkpoints.find_checkpoint_root(source))
  return paths


def load_weights(source: str, quiet: bool = False) -> tuple[dict, ModelInfo]:
  """(variables, model info) from a checkpoint, official weights or a pretrained name.

  `source` may be a training workdir, a checkpoint folder (its latest step), one
  step folder, an official `.pth` / `.pdparams` / `.safetensors` file, or a
  `zoo.REGISTRY` name such as "rednet50" (downloaded once, then cached; an
  existing path of that name wins). Raises FileNotFoundError naming the path
  when there is nothing to load there. `quiet`: no progress bars.
  """
  if zoo.is_name(source) and not os.path.exists(source):
    variables, config = load_pretrained(source, quiet=quiet)
  elif source.endswith(OFFICIAL_SUFFIXES):
    variables, config = load_official(source, quiet=quiet)
  else:
    return checkpoints.load_for_inference(source)
  return variables, official_model_info(config)


def official_layout(variables: dict, info: ModelInfo) -> dict:
  """`variables` as an mmcls state dict of numpy arrays, checked to load back strictly
  into the official RedNet (the layout exists for RedNet classifiers only)."""
  match = re.fullmatch(r"rednet(\d*)", info.model)
  if match is None:
    raise ValueError(
      f"the official (mmcls) layout exists for RedNet classifiers only; this model is "
      f"{info.model!r}: keep it as an orbax checkpoint"
    )
  arrays = mmcls.from_flax(variables)
  depth = int(match[1] or info.model_kwargs.get("depth", RedNet.depth))
  try:
    _convert(arrays, depth, {}, display=lambda k: k)
  except ValueError as e:
    raise ValueError(
      f"this {info.model} ({info.model_kwargs}) differs from the official "
      f"architecture, so no official file can hold it: {one_line(e)}"
    ) from None
  return arrays


FORMATS = ("orbax", "torch", "safetensors")


def format_of(out: str, given: str | None) -> str:
  if given is not None:
    if given not in FORMATS:
      raise ValueError(f"--format {given!r}: expected one of {', '.join(FORMATS)}")
    return given
  if out.endswith((".pth", ".pt")):
    return "torch"
  return "safetensors" if out.endswith(".safetensors") else "orbax"


def _write_file(path: str, write) -> None:
  """`write(tmp)`, then renamed to `path`: an interrupted write leaves no half file."""
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_weights(variables: dict, info: ModelInfo, out: str, fmt: str, overwrite: bool) -> None:
  """Writes `variables` as an orbax checkpoint folder (with `info`), a PyTorch `.pth`
  state dict or a `.safetensors` file (both in the official mmcls layout)."""
  if fmt == "orbax":
    _replaceable(out, overwrite)
    mngr = checkpoints.manager(output_folder(out, "output folder"), async_save=False)
    checkpoints.save(mngr, 0, variables=variables, model_info=info)
    mngr.close()
    return
  arrays = official_layout(variables, info)
  output_file(out, overwrite)
  if fmt == "torch":
    torch = _import_torch("writing .pth files")
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    _write_file(out, lambda tmp: torch.save(state, tmp))
  else:
    safetensors_numpy = _import_safetensors("writing .safetensors files")
    metadata = {"format": "pt", "model": info.model, "num_classes": str(info.num_classes)}
    _write_file(out, lambda tmp: safetensors_numpy.save_file(arrays, tmp, metadata=metadata))
