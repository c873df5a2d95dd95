"""Configs as Python (ml_collections), shipped with the package, and how to name them.

A config is chosen by name, `NAME[:ARG]`, from this package (`default`,
`imagenet:rednet101`, `digitscenes_seg:conv`, ...), or by path,
`path/to/my_config.py[:ARG]`; either way a module whose `get_config(ARG)`
returns a `ConfigDict`. Fields are then overridden with `FIELD=VALUE` strings
(`--config.FIELD=VALUE` on the command line), nested fields with dots.
`validate` checks every field's value before anything is built.

A training run writes its config into its workdir as Python (`RUN_CONFIG`,
`save_run_config`): a config file like any other, which the commands that take
that workdir's weights use unless told otherwise (`run_config_of`).
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import importlib
import importlib.util
import inspect
import math
import numbers
import os
from collections.abc import Sequence
from importlib import resources

import jax
import ml_collections
import numpy as np

from involution_jax.data.classification import AUGMENTATIONS

RUN_CONFIG = "config.py"  # in a training workdir: the config it was trained with


def names() -> list[str]:
  """The configs this package ships (the module names in this folder)."""
  return sorted(
    f.name[:-3]
    for f in resources.files(__package__).iterdir()
    if f.name.endswith(".py") and not f.name.startswith("_")
  )


def list_configs(pattern: str = "*") -> list[str]:
  """The shipped configs' names (`names`) matching the shell-style `pattern`, e.g.
  "*imagenet"; each trains with `involution-train --config NAME`."""
  return [name for name in names() if fnmatch.fnmatchcase(name, pattern)]


def description(spec: str) -> str:
  """The first paragraph of a config's docstring, on one line (NAME or PATH.py, no :ARG)."""
  doc = (_load_module(spec).__doc__ or "").strip()
  return " ".join(doc.split("\n\n")[0].split())


def _load_module(spec: str):
  if spec.endswith(".py") or os.sep in spec or "/" in spec:
    if not os.path.isfile(spec):
      raise FileNotFoundError(f"config file not found: {spec}")
    module_spec = importlib.util.spec_from_file_location("involution_jax_user_config", spec)
    module = importlib.util.module_from_spec(module_spec)
    try:
      module_spec.loader.exec_module(module)
    except SyntaxError as e:
      raise ValueError(f"config file {e.filename or spec}, line {e.lineno}: {e.msg}") from None
    return module
  if spec not in names():
    close = difflib.get_close_matches(spec, names(), n=1)
    raise ValueError(
      f"unknown config {spec!r}"
      + (f" (did you mean {close[0]!r}?)" if close else "")
      + f"; shipped configs: {', '.join(names())}; or pass a path to a .py file"
    )
  return importlib.import_module(f"{__package__}.{spec}")


def get_config(spec: str = "default", overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config `spec` names (`NAME[:ARG]` or `PATH.py[:ARG]`), locked, fields overridden.

  Raises ValueError (unknown name, unknown field, a value of the wrong type)
  or FileNotFoundError (no such config file), each naming the bad value.
  """
  if os.path.isfile(spec):  # an existing file is a path, whatever its name holds (":")
    path, arg = spec, ""
  else:
    path, _, arg = spec.partition(":")
  module = _load_module(path)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config {path!r} has no get_config() function")
  if arg and not inspect.signature(module.get_config).parameters:
    raise ValueError(f"config {path!r} takes no argument, got {path}:{arg}; use {path!r}")
  config = module.get_config(arg) if arg else module.get_config()
  if isinstance(config, dict):
    config = ml_collections.ConfigDict(config)
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(
      f"config {path!r}: get_config() must return an ml_collections.ConfigDict (or a "
      f"dict), got {type(config).__name__!r}"
    )
  config.lock()
  for override in overrides:
    apply_override(config, override)
  return config


def _fields(config: ml_collections.ConfigDict) -> list[str]:
  out = []
  for key, value in config.items():
    out.append(key)
    if isinstance(value, ml_collections.ConfigDict):
      out += [f"{key}.{sub}" for sub in _fields(value)]
  return out


def _parse(text: str, kind: type | None):
  """A command-line string as a value for a field of type `kind`."""
  if kind is str:
    return text
  if kind is bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise ValueError(f"expected a bool (True / False), got {text!r}")
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
  """Sets one `FIELD=VALUE` (dots for nested fields) in place; the value parsed as Python
  (`0.1`, `(1, 1, 1)`, `True`), or taken as a string for string fields."""
  field, sep, text = override.partition("=")
  if not sep or not field:
    raise ValueError(f"config override {override!r} is not FIELD=VALUE")
  *parents, leaf = field.split(".")
  target = config
  for depth, key in enumerate(parents + [leaf]):
    if not isinstance(target, ml_collections.ConfigDict) or key not in target:
      close = difflib.get_close_matches(field, _fields(config), n=1)
      raise ValueError(
        f"unknown config field {field!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
      )
    if depth < len(parents):
      target = target[key]
  kind = target.get_type(leaf)
  try:
    setattr(target, leaf, _parse(text, kind))
  except (TypeError, ValueError):
    expected = kind.__name__ if kind else "a Python literal"
    raise ValueError(
      f"bad value for config field {field!r}: {text!r} (expected {expected})"
    ) from None


def _integer(v) -> bool:
  """An int (NumPy's too), not a bool."""
  return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)


def _number(v) -> bool:
  """A finite int or float (NumPy's too), not a bool."""
  return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) and math.isfinite(v)


def _per_channel(v, positive: bool) -> bool:
  """Three finite numbers (RGB), all > 0 where `positive`."""
  values = list(v)
  return len(values) == 3 and all(_number(x) and (x > 0 or not positive) for x in values)


# Field: (test, what is allowed). Fields a config lacks are not checked.
_FIELD_RULES = {
  "learning_rate": (lambda v: _number(v) and v > 0, "a finite number > 0"),
  "weight_decay": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
  "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "warmup_epochs": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
  "warmup_init_factor": (lambda v: 0 <= v <= 1, "in [0, 1]"),
  "grad_clip_norm": (lambda v: _number(v) and v >= 0, "a finite number >= 0 (0: no clipping)"),
  "num_epochs": (lambda v: _number(v), "a finite number (ignored when num_train_steps > 0)"),
  "num_train_steps": (lambda v: _integer(v), "an integer (<= 0: use num_epochs)"),
  "mean": (lambda v: _per_channel(v, positive=False), "3 finite numbers (R, G, B)"),
  "std": (lambda v: _per_channel(v, positive=True), "3 finite numbers > 0 (R, G, B)"),
  "batch_size": (lambda v: _integer(v) and v > 0, "an integer > 0"),
  "eval_batch_size": (lambda v: _integer(v) and v > 0, "an integer > 0"),
  "grad_accum_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
  "log_every_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
  "checkpoint_every_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
  "eval_every_steps": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0: at the end only)"),
  "keep_checkpoints": (
    lambda v: v is None or (_integer(v) and v >= 1),
    "an integer >= 1 (or None: keep all)",
  ),
  "data_workers": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0: read in this process)"),
  "prefetch_batches": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
  "max_unreadable_fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
  "image_size": (
    lambda v: all(n > 0 for n in ((v,) if isinstance(v, int) else v)),
    "> 0 (an int, or (height, width) for dense models)",
  ),
  "eval_crop": (lambda v: 0 < v <= 1, "in (0, 1]"),
  "augment": (lambda v: v in AUGMENTATIONS, f"one of {', '.join(AUGMENTATIONS)}"),
  "optimizer": (lambda v: v in ("sgd", "adamw"), "'sgd' or 'adamw'"),
  "schedule": (lambda v: v in ("cosine", "poly", "step"), "'cosine', 'poly' or 'step'"),
  "num_classes": (lambda v: v is None or v >= 1, ">= 1"),
}


def validate(config: ml_collections.ConfigDict, devices: int | None = None) -> None:
  """Every field's value, before anything is built: one error naming the field and
  what is allowed, for values that would fail later or silently train badly."""

  def need(ok, message):
    if not ok:
      raise ValueError(f"invalid config: {message}")

  for field, (allowed, rule) in _FIELD_RULES.items():
    if field in config:
      value = config[field]
      try:
        ok = allowed(value)
      except TypeError:  # None or a wrong type where a number is needed
        ok = False
      need(ok, f"{field} must be {rule}, got {value!r}")
  need(
    config.num_train_steps > 0 or config.num_epochs > 0, "set num_epochs > 0 or num_train_steps > 0"
  )
  accum = config.get("grad_accum_steps", 1)
  devices = devices or jax.device_count()
  for name in ("batch_size", "eval_batch_size"):
    size, step = config[name], devices * (accum if name == "batch_size" else 1)
    need(
      size % step == 0,
      f"{name}={size} must be divisible by the {devices} device(s)"
      + (f" x grad_accum_steps={accum}" if name == "batch_size" and accum > 1 else "")
      + f" (try {max(1, size // step) * step})",
    )


def check_num_classes(config: ml_collections.ConfigDict, dataset) -> None:
  """`config.num_classes`, where a config sets it, must be the dataset's class count."""
  expected = config.get("num_classes")
  if expected is not None and expected != dataset.num_classes:
    raise ValueError(
      f"invalid config: num_classes={expected}, but {config.dataset} has "
      f"{dataset.num_classes} classes (a partly copied dataset?); set "
      f"--config.num_classes={dataset.num_classes} if that is what you want"
    )


def _flat(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
  """{"field.sub": value} of every leaf field."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _literal(value) -> str:
  """A field's value as Python source; ValueError for what a config file cannot hold."""
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return f'float("{value}")'
  if isinstance(value, tuple | list):
    items = ", ".join(_literal(v) for v in value)
    return (
      f"({items}{',' if len(value) == 1 else ''})" if isinstance(value, tuple) else f"[{items}]"
    )
  if type(value) in (str, int, float, bool):  # not a subclass: an enum's repr is no literal
    return repr(value)
  raise ValueError(f"{value!r} ({type(value).__name__}) cannot be written as Python")


# Instructions to one run, not part of what it trains: written as not set.
ONE_RUN_FIELDS = ("resume_step",)


def _source(config: ml_collections.ConfigDict, indent: str, top: bool = True) -> str:
  """The fields of `config` as the items of a Python dict literal, one per line."""
  lines = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      text = "{\n" + _source(value, indent + "  ", top=False) + indent + "}"
    elif value is None or (top and key in ONE_RUN_FIELDS):
      kind = config.get_type(key)
      if kind not in (None, type(None), str, int, float, bool, tuple, list):
        raise ValueError(f"config field {key!r}: an unset {kind.__name__} cannot be written")
      text = f"placeholder({kind.__name__})" if kind not in (None, type(None)) else "None"
    else:
      try:
        text = _literal(value)
      except ValueError as e:
        raise ValueError(f"config field {key!r}: {e}") from None
    lines.append(f"{indent}{key!r}: {text},\n")
  return "".join(lines)


def to_python(config: ml_collections.ConfigDict) -> str:
  """`config` as the source of a config file whose `get_config()` returns its values
  (`ONE_RUN_FIELDS` not set); ValueError naming a field no config file can hold."""
  return (
    '"""The config this workdir was trained with, written by the trainer. Every field is\n'
    "a value here: one computed from another in the shipped config (e.g. imagenet's\n"
    "learning_rate from batch_size) does not follow an override of it. The commands that\n"
    "take this workdir use this file unless given --config; train with it elsewhere:\n"
    'involution-train --config <this file>."""\n\n'
    "import ml_collections\nfrom ml_collections.config_dict import placeholder\n\n\n"
    "def get_config() -> ml_collections.ConfigDict:\n"
    "  return ml_collections.ConfigDict({\n" + _source(config, "    ") + "  })\n"
  )


def differences(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """The fields of `config` that differ from the run config in `workdir` ("FIELD: OLD ->
  NEW", `ONE_RUN_FIELDS` aside); [] where there is none, or it cannot be read."""
  path = os.path.join(workdir, RUN_CONFIG)
  try:
    before = _flat(get_config(path)) if os.path.isfile(path) else {}
  except (OSError, ValueError, SyntaxError, NameError):  # edited by hand, or damaged
    before = {}
  now = {k: v for k, v in _flat(config).items() if k not in ONE_RUN_FIELDS}
  return [
    f"{k}: {before.get(k, '(none)')} -> {now.get(k, '(none)')}"
    for k in sorted(set(before) | set(now))
    if before and k not in ONE_RUN_FIELDS and before.get(k) != now.get(k)
  ]


def save_run_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `config` to `workdir/RUN_CONFIG` (replaced whole)."""
  path = os.path.join(workdir, RUN_CONFIG)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(to_python(config))
  os.replace(tmp, path)


_CHECKPOINTS = "checkpoints"  # weights.checkpoints.CHECKPOINT_SUBDIR (test_configs ties them)


def run_config_of(weights: str) -> str | None:
  """The config file of the training run whose workdir `weights` is (or its checkpoints/
  folder, or one step there); None for other weights (a file, a pretrained name, a
  converted checkpoint, an older workdir)."""
  if not os.path.isdir(weights):
    return None
  folder = os.path.normpath(weights)
  parent = os.path.dirname(folder)
  candidates = [folder]  # the workdir itself first, even one named "checkpoints"
  if os.path.basename(folder) == _CHECKPOINTS:
    candidates.append(parent)
  elif os.path.basename(folder).isdigit() and os.path.basename(parent) == _CHECKPOINTS:
    candidates.append(os.path.dirname(parent))
  for workdir in candidates:  # a run's: its config beside its checkpoints
    path = os.path.join(workdir, RUN_CONFIG)
    if os.path.isfile(path) and os.path.isdir(os.path.join(workdir, _CHECKPOINTS)):
      return path
  return None
