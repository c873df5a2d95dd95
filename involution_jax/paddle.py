"""PaddleClas `.pdparams` files without Paddle: a restricted unpickler, Paddle's names.

A `.pdparams` file is a pickle of {name: numpy array}. `load_pdparams` reads it
with an unpickler that allows only numpy's array reconstruction (a pickle can
otherwise run any importable callable). `as_torch_layout` renames and lays out
the arrays as mmcls does, so that `convert.py` converts one layout only;
`paddle_key` names a key the PaddleClas way in errors.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

EXTRA_KEY = "StructuredToParameterName@@"  # Paddle's name table, not an array

# What a pickle of numpy arrays needs (`_codecs.encode` carries bytes in protocol 2).
_ALLOWED_GLOBALS = {
  ("numpy._core.multiarray", "_reconstruct"),
  ("numpy._core.multiarray", "scalar"),
  ("numpy", "ndarray"),
  ("numpy", "dtype"),
  ("_codecs", "encode"),
}


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle referenced a global that a weights file has no business with."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles plain containers of numpy arrays; refuses every other global.

  A pickle can name any importable callable and run it; a weights file needs
  only numpy's array reconstruction.
  """

  def find_class(self, module: str, name: str):
    canonical = re.sub(r"^numpy\.core\b", "numpy._core", module)  # numpy 1.x pickles
    if (canonical, name) in _ALLOWED_GLOBALS:
      return super().find_class(canonical, name)
    raise UnsafePickleError(
      f"refusing to load global {module}.{name}: a .pdparams file may reference only "
      "numpy's array globals (this file is not a plain weights file, or is unsafe)"
    )


def load_pdparams(path: str) -> dict[str, np.ndarray]:
  """Reads a PaddleClas `.pdparams` file without Paddle: {name: numpy array}."""
  with open(path, "rb") as f:
    try:
      state_dict = _NumpyOnlyUnpickler(f).load()
    except UnsafePickleError:
      raise
    except Exception as e:  # truncated or not a pickle at all
      raise ValueError(f"{path} is not a readable .pdparams pickle: {e}") from e
  if not isinstance(state_dict, dict):
    raise ValueError(f"{path} holds a {type(state_dict).__name__}, expected a dict of arrays")
  return state_dict


def _paddle_to_torch_key(key: str) -> str:
  if key.startswith("fc."):
    return "head." + key
  key = re.sub(r"\._mean$", ".running_mean", key)
  return "backbone." + re.sub(r"\._variance$", ".running_var", key)


def paddle_key(key: str) -> str:
  if key.startswith("head."):
    return key[len("head.") :]
  key = re.sub(r"\.running_mean$", "._mean", key[len("backbone.") :])
  return re.sub(r"\.running_var$", "._variance", key)


def as_torch_layout(state_dict: Mapping[str, Any]) -> dict:
  """PaddleClas names and layouts -> mmcls names and layouts."""
  torch_style = {}
  for key, value in state_dict.items():
    if key == EXTRA_KEY:
      continue
    value = np.asarray(value)
    if key == "fc.weight":  # Paddle's Linear stores (in, out)
      value = value.T
    torch_style[_paddle_to_torch_key(key)] = value
  return torch_style
