"""The Task protocol: everything outside `tasks/` knows of a kind of problem.

Training, evaluation, prediction and generation work from these methods and never
branch on a task's name; a new kind of problem is a class that has them, added to
`TASKS` (docs/architecture.md walks through one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax

from involution_jax.data.pipeline import Dataset
from involution_jax.tasks.common import LossFn
from involution_jax.weights.info import ModelInfo


@dataclasses.dataclass(frozen=True)
class ServingInput:
  """An exported model's input: `name`, `shape` after the batch axis, `dtype`, in words
  how a user prepares it (`preparation`) and what the model returns (`returns`)."""

  name: str
  shape: tuple[int, ...]
  dtype: str
  preparation: str
  returns: str


@runtime_checkable
class Task(Protocol):
  """A kind of problem: its data, loss, metrics, model info and inference."""

  name: str  # config.task and ModelInfo.task
  train_metrics: tuple[str, ...]  # what the loss reports besides the loss, logged
  input_dtype: Any  # of the model's input: float32 images, int32 tokens
  input_key: str  # the model's input in an example: "image" or "tokens"
  # Where `init_from` weights go: None, the whole model (a classifier's head may differ),
  # or a submodule's name ("backbone": a classifier's weights under a dense model).
  pretrained_into: str | None
  # A language model: it continues a prompt (`involution-generate`, and `Predictor`, which
  # then uses neither `preprocess_from_info` nor `predict_fn`).
  generates_text: bool

  # --- training and evaluation ------------------------------------------------------------
  def dataset(self, config, split: str) -> Dataset:
    """The split's records, classes and class names."""

  def preprocess(self, config) -> Any:
    """Record -> fixed-shape example (`.train(record, rng)`, `.eval(record)`, `.blank()`)."""

  def input_shape(self, config) -> tuple[int, ...]:
    """One example's model input shape, e.g. (H, W, 3) or (T,)."""

  def loss_fn(self, model: nn.Module, config) -> LossFn:
    """(variables, batch, rng) -> (loss, (batch statistics, {metric: value}))."""

  def eval_fn(self, model: nn.Module) -> Callable[[dict, dict], dict]:
    """(variables, batch) -> per-batch outputs, on the device."""

  def summarize(self, outputs: Iterable[dict], dataset: Dataset) -> dict:
    """Every batch's outputs -> the evaluation's metrics, on the host."""

  def model_info(self, config, dataset: Dataset) -> ModelInfo:
    """What a checkpoint records of the model trained by `config` on `dataset`."""

  # --- inference ----------------------------------------------------------------------------
  def preprocess_from_info(self, info: ModelInfo) -> Any:
    """The evaluation preprocessing the model `info` describes was trained with.

    Raises:
      ValueError: the task's models are not predicted on one input at a time (a language
        model continues a prompt).
    """

  def predict_fn(self, model: nn.Module) -> Callable[[dict, jax.Array], Any]:
    """(variables, prepared inputs (N, ...)) -> per-input outputs, jit-compilable."""

  def serving_input(self, info: ModelInfo) -> ServingInput:
    """What an exported model takes: its name, shape after the batch, dtype, preparation."""

  def serving_fn(self, model: nn.Module) -> Callable[[dict, jax.Array], Any]:
    """(variables, inputs (N, ...)) -> what an exported model returns, jit-compilable."""

  def prediction(
    self,
    output: Any,
    example: dict,
    size: tuple[int, int] | None,
    class_names: list[str],
    top_k: int,
  ) -> dict:
    """One input's outputs -> its result for users (the `top_k` classes, a mask,
    detections), in the pixels of the image as given, `size` (width, height) (None for
    a text); `example` is its prepared example."""
