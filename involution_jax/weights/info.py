"""The model info a checkpoint carries -> the model and its input preparation."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import flax.linen as nn
from flax import errors as flax_errors

from involution_jax.data.classification import Preprocess
from involution_jax.data.dense import DensePreprocess
from involution_jax.models import create_model


def model_from_info(info: dict, dtype=None) -> nn.Module:
  """The model a checkpoint's info describes (lists in the JSON back to tuples)."""
  kwargs = {
    k: tuple(v) if isinstance(v, list) else v for k, v in info.get("model_kwargs", {}).items()
  }
  if dtype is not None:
    kwargs["dtype"] = dtype
  return create_model(info["model"], num_classes=info["num_classes"], **kwargs)


# Flax's errors for weights that a model does not fit: the parameter (or statistic) and both
# shapes, or the one that is missing.
_MISFIT = (
  flax_errors.ScopeParamShapeError,
  flax_errors.ScopeParamNotFoundError,
  flax_errors.ScopeVariableNotFoundError,
  flax_errors.ScopeCollectionNotFound,
)


@contextlib.contextmanager
def fitting_their_description() -> Iterator[None]:
  """Around the first use of weights with the model `model_from_info` built from their
  info: Flax's error for weights that do not fit it (an edited or swapped model info)
  becomes a ValueError in one line, without Flax's link to its docs.

  A description with fewer layers than the weights hold is not caught: the weights it
  does not ask for go unused.
  """
  try:
    yield
  except _MISFIT as e:
    detail = re.sub(r" \(https?://\S+\)$", "", " ".join(str(e).split()))
    raise ValueError(f"the weights do not fit the model their description builds: {detail}") from e


# What a checkpoint's info records of the model's input (image tasks), over any config's.
PREPROCESSING = ("image_size", "mean", "std", "eval_crop")


def preprocess_from_info(info: dict) -> Preprocess | DensePreprocess:
  """The evaluation preprocessing a checkpoint's model was trained with."""
  task = info.get("task", "classification")
  if task == "classification":
    return Preprocess(
      info["image_size"],
      tuple(info["mean"]),
      tuple(info["std"]),
      eval_crop=info.get("eval_crop", 1.0),
    )
  size = info["image_size"]
  return DensePreprocess(
    task,
    (size, size) if isinstance(size, int) else tuple(size),
    tuple(info["mean"]),
    tuple(info["std"]),
  )
