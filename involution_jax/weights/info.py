"""`ModelInfo`, what a checkpoint records about its model, and the model it describes
(its input preparation is its task's: `tasks.task_named(info.task).preprocess_from_info`).

Every checkpoint holds one, as JSON in its `model` item (`checkpoints.save` writes
`to_json`, `checkpoints.saved_info` reads `from_json`); official weights get theirs from
`convert.official_model_info`, a training run from its task's `model_info`. Checkpoints
written before this type held a plain dict without `version` (and, for classifiers, without
`task`): `from_json` reads those too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
from flax import errors as flax_errors

from involution_jax.models import create_model

# The layout `to_json` writes; `from_json` reads this one and the unversioned dicts before it.
INFO_VERSION = 1
_SEQUENCES = ("class_names", "mean", "std", "vocabulary")


class UnreadableInfo(ValueError):
  """A model info this version cannot read (newer, or with unknown or missing fields):
  never a damaged checkpoint, so nothing sets its step aside or falls back past it."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What a checkpoint records about its model: enough to build it (`model`,
  `model_kwargs`, `num_classes`), prepare its input and name its outputs.

  Image tasks record the input they were trained on: `image_size` (an int, or (h, w) for
  dense tasks), `mean`, `std` and, for classifiers, `eval_crop`. Text tasks record
  `context` (tokens), and a language model its `corpus`, a text classifier its
  `vocabulary` with its `vocabulary_sha256`. A field a task does not record is None.
  """

  model: str
  num_classes: int
  task: str = "classification"
  model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  class_names: tuple[str, ...] | None = None
  image_size: int | tuple[int, int] | None = None
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None
  eval_crop: float | None = None
  context: int | None = None
  corpus: Mapping[str, Any] | None = None
  vocabulary: tuple[str, ...] | None = None
  vocabulary_sha256: str | None = None

  def __post_init__(self) -> None:
    # Sequences as tuples, and the model's fields as their JSON (tuples as lists): infos
    # compare equal whether they came from a config or from a checkpoint's file.
    for name in _SEQUENCES:
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, tuple(value))
    if isinstance(self.image_size, (list, tuple)):
      object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
    object.__setattr__(self, "model_kwargs", json.loads(json.dumps(dict(self.model_kwargs))))

  __hash__ = None  # frozen, but its dict fields are not hashable

  @classmethod
  def of(cls, info: ModelInfo | Mapping[str, Any]) -> ModelInfo:
    """`info`, or the ModelInfo a dict in the checkpoint layout describes."""
    return info if isinstance(info, cls) else cls.from_json(info, "the given model info")

  @property
  def names(self) -> list[str]:
    """The class names, or the class numbers as text where none are recorded."""
    return list(self.class_names or map(str, range(self.num_classes)))

  def to_json(self) -> dict:
    """The JSON object a checkpoint stores: the fields that are set, and the version."""
    out = {"version": INFO_VERSION}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if value is not None:
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out

  @classmethod
  def from_json(cls, record: Mapping[str, Any], where: str = "the checkpoint") -> ModelInfo:
    """A stored info: this version's, or an unversioned dict from before it.

    Raises:
      UnreadableInfo: a newer version, an unknown field or a missing one, named.
    """
    record = dict(record)
    version = record.pop("version", 0)
    if not isinstance(version, int) or version > INFO_VERSION:
      raise UnreadableInfo(
        f"{where} records its model in info version {version!r}; this involution-jax reads "
        f"versions up to {INFO_VERSION}: upgrade it"
      )
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(record) - known)
    missing = sorted(k for k in ("model", "num_classes") if k not in record)
    if unknown or missing:
      problems = [f"unknown fields {unknown}"] * bool(unknown) + [f"no {missing}"] * bool(missing)
      raise UnreadableInfo(f"{where} records its model unreadably: {'; '.join(problems)}")
    return cls(**record)


def model_from_info(info: ModelInfo | Mapping[str, Any], dtype=None) -> nn.Module:
  """The model a checkpoint's info describes (lists in the JSON back to tuples)."""
  info = ModelInfo.of(info)
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in info.model_kwargs.items()}
  if dtype is not None:
    kwargs["dtype"] = dtype
  return create_model(info.model, num_classes=info.num_classes, **kwargs)


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
