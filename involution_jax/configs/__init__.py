"""Configs as Python (ml_collections), shipped with the package, and how to name them.

A config is chosen by name, `NAME[:ARG]`, from this package (`default`,
`imagenet:rednet101`, `digitscenes_seg:conv`, ...), or by path,
`path/to/my_config.py[:ARG]`; either way a module whose `get_config(ARG)`
returns a `ConfigDict`. Fields are then overridden with `FIELD=VALUE` strings
(`--config.FIELD=VALUE` on the command line), nested fields with dots.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
from collections.abc import Sequence
from importlib import resources

import ml_collections


def names() -> list[str]:
  """The configs this package ships (the module names in this folder)."""
  return sorted(
    f.name[:-3]
    for f in resources.files(__package__).iterdir()
    if f.name.endswith(".py") and not f.name.startswith("_")
  )


def _load_module(spec: str):
  if spec.endswith(".py") or os.sep in spec or "/" in spec:
    if not os.path.isfile(spec):
      raise FileNotFoundError(f"config file not found: {spec}")
    module_spec = importlib.util.spec_from_file_location("involution_jax_user_config", spec)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
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
  path, _, arg = spec.partition(":")
  module = _load_module(path)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config {path!r} has no get_config() function")
  config = module.get_config(arg) if arg else module.get_config()
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
