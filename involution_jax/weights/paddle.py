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
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

EXTRA_KEY = "StructuredToParameterName@@"  # Paddle's name table, not an array


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle referenced a global that a weights file has no business with, or declared
  an array that is not plain numbers held in the file."""


def _plain(dtype, data, count: int, what: str) -> np.dtype:
  """The plain-number dtype (bool, int, float, complex; no fields, no sub-arrays) that
  `dtype` names, rebuilt from its name (a pickle can edit a dtype's state), when `data`
  is the bytes of `count` such numbers; else an UnsafePickleError."""
  plain = isinstance(dtype, np.dtype) and dtype.kind in "biufc" and dtype.fields is None
  if not (plain and dtype.subdtype is None):
    raise UnsafePickleError(f"refusing {what} of dtype {dtype}: a weights file holds numbers")
  dtype = np.dtype(dtype.str)
  held = f"{len(data)} bytes" if isinstance(data, bytes | bytearray) else type(data).__name__
  if held != f"{count * dtype.itemsize} bytes":
    raise UnsafePickleError(
      f"refusing {what} that declares {count} x {dtype} ({count * dtype.itemsize} bytes) "
      f"but holds {held}"
    )
  return dtype


class _CheckedArray(np.ndarray):
  """What the unpickler builds arrays as: the state is checked before numpy allocates.
  `spend(nbytes, what)`: the unpickler's count of the bytes it makes."""

  def __setstate__(self, state):
    shape, dtype, fortran, data = state[-4:]  # ([version,] shape, dtype, is_fortran, data)
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
      raise UnsafePickleError(f"refusing an array of shape {shape!r}")
    dtype = _plain(dtype, data, math.prod(shape), f"an array of shape {shape}")
    self.spend(len(data), f"an array of shape {shape}")
    super().__setstate__((shape, dtype, bool(fortran), data))


_NDARRAY = object()  # stands for numpy.ndarray, which a pickle may only pass to _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles plain containers of numpy arrays; refuses every other global.

  A pickle can name any importable callable and run it; a weights file needs only
  numpy's array reconstruction, given here as checked stand-ins. A pickle can also
  reuse one stored string or array many times: the bytes made (arrays' data and
  protocol 2's byte strings) may not exceed twice the file's size, what a file of
  arrays needs.
  """

  def __init__(self, file, size: int):
    super().__init__(file)
    self._left = 2 * size
    self._globals = {
      ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
      ("numpy._core.multiarray", "scalar"): self._scalar,
      ("numpy", "ndarray"): _NDARRAY,
      ("numpy", "dtype"): np.dtype,
      ("_codecs", "encode"): self._latin1_bytes,  # how protocol 2 carries bytes
    }

  def find_class(self, module: str, name: str):
    canonical = re.sub(r"^numpy\.core\b", "numpy._core", module)  # numpy 1.x pickles
    if (canonical, name) in self._globals:
      return self._globals[canonical, name]
    raise UnsafePickleError(
      f"refusing to load global {module}.{name}: a .pdparams file may reference only "
      "numpy's array globals (this file is not a plain weights file, or is unsafe)"
    )

  def _spend(self, nbytes: int, what: str) -> None:
    self._left -= nbytes
    if self._left < 0:
      raise UnsafePickleError(f"refusing {what}: the file makes more bytes than it could hold")

  def _reconstruct(self, cls, shape, dtype):
    if cls is not _NDARRAY or tuple(shape) != (0,):
      raise UnsafePickleError("refusing an array made otherwise than numpy pickles arrays")
    array = np.ndarray.__new__(_CheckedArray, (0,), np.uint8)
    array.spend = self._spend
    return array

  def _scalar(self, dtype, data):
    dtype = _plain(dtype, data, 1, "a scalar")
    self._spend(dtype.itemsize, "a scalar")
    return np._core.multiarray.scalar(dtype, data)

  def _latin1_bytes(self, text, encoding):
    """`_codecs.encode` as protocol 2 pickles bytes: latin-1, one byte per character."""
    if not (isinstance(text, str) and encoding == "latin1"):
      raise UnsafePickleError(f"refusing _codecs.encode(..., {encoding!r}): bytes are latin1")
    self._spend(len(text), "a byte string")
    return text.encode("latin1")


def load_pdparams(path: str) -> dict[str, np.ndarray]:
  """Reads a PaddleClas `.pdparams` file without Paddle: {name: numpy array}."""
  with open(path, "rb") as f:
    try:
      state_dict = _NumpyOnlyUnpickler(f, os.fstat(f.fileno()).st_size).load()
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
