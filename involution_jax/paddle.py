"""PaddleClas `.pdparams` files without Paddle: a restricted unpickler, Paddle's names.

A `.pdparams` file is a pickle of {name: numpy array}. `load_pdparams` reads it
with an unpickler that allows only numpy's array reconstruction (a pickle can
otherwise run any importable callable), and only arrays of plain numbers whose
declared size is the data the file holds (a few bytes can otherwise declare an
array of any size, which numpy would allocate). `as_torch_layout` renames and lays out
the arrays as mmcls does, so that `convert.py` converts one layout only;
`paddle_key` names a key the PaddleClas way in errors.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

EXTRA_KEY = "StructuredToParameterName@@"  # Paddle's name table, not an array


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle referenced a global that a weights file has no business with, or declared
  an array that is not plain numbers held in the file."""


def _check_plain(dtype, data, count: int, what: str) -> None:
  """`data` must be the bytes of `count` items of the plain-number `dtype`."""
  if not isinstance(dtype, np.dtype) or dtype.hasobject:
    raise UnsafePickleError(f"refusing {what} of dtype {dtype}: a weights file holds numbers")
  held = f"{len(data)} bytes" if isinstance(data, bytes | bytearray) else type(data).__name__
  if held != f"{count * dtype.itemsize} bytes":
    raise UnsafePickleError(
      f"refusing {what} that declares {count} x {dtype} ({count * dtype.itemsize} bytes) "
      f"but holds {held}"
    )


class _CheckedArray(np.ndarray):
  """What the unpickler builds arrays as: the state is checked before numpy allocates."""

  def __setstate__(self, state):
    shape, dtype, _, data = state[-4:]  # ([version,] shape, dtype, is_fortran, data)
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
      raise UnsafePickleError(f"refusing an array of shape {shape!r}")
    _check_plain(dtype, data, math.prod(shape), f"an array of shape {shape}")
    super().__setstate__(state)


_NDARRAY = object()  # stands for numpy.ndarray, which a pickle may only pass to _reconstruct


def _reconstruct(cls, shape, dtype):
  if cls is not _NDARRAY or tuple(shape) != (0,):
    raise UnsafePickleError("refusing an array made otherwise than numpy pickles arrays")
  return np.ndarray.__new__(_CheckedArray, (0,), np.uint8)


def _scalar(dtype, data):
  _check_plain(dtype, data, 1, "a scalar")
  return np._core.multiarray.scalar(dtype, data)


# The numpy globals a pickle of arrays names, each given as a checked stand-in; and
# `_codecs.encode`, which carries bytes in protocol 2.
_NUMPY_GLOBALS = {
  ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
  ("numpy._core.multiarray", "scalar"): _scalar,
  ("numpy", "ndarray"): _NDARRAY,
  ("numpy", "dtype"): np.dtype,
}
_CODECS_ENCODE = ("_codecs", "encode")


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles plain containers of numpy arrays; refuses every other global.

  A pickle can name any importable callable and run it; a weights file needs
  only numpy's array reconstruction.
  """

  def find_class(self, module: str, name: str):
    canonical = re.sub(r"^numpy\.core\b", "numpy._core", module)  # numpy 1.x pickles
    if (canonical, name) == _CODECS_ENCODE:
      return super().find_class(canonical, name)
    if (canonical, name) in _NUMPY_GLOBALS:
      return _NUMPY_GLOBALS[canonical, name]
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
  return {
    k: v.view(np.ndarray) if isinstance(v, _CheckedArray) else v for k, v in state_dict.items()
  }


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
