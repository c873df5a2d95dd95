"""Text tasks: byte-level language modelling, word-level text classification."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NoReturn

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from involution_jax.data import labelled_text, text
from involution_jax.data.pipeline import Dataset
from involution_jax.tasks.base import ServingInput
from involution_jax.tasks.common import LossFn, cross_entropy, model_info, sum_tree, top_classes
from involution_jax.weights.info import ModelInfo


class TextTask:
  """What the text tasks share: their models read token ids."""

  name = ""
  input_dtype = jnp.int32
  input_key = "tokens"
  pretrained_into = None  # a sequence model has no backbone: its whole self
  generates_text = False

  def serving_fn(self, model: nn.Module):
    """The logits per position, (N, T, 256)."""
    return lambda variables, tokens: model.apply(variables, tokens, train=False)


class LanguageModel(TextTask):
  """Next-token prediction on byte tokens; metrics per real target (mask 1)."""

  name = "language_model"
  train_metrics = ("accuracy",)
  generates_text = True

  def _continues_prompts(self, model: str = "") -> NoReturn:
    named = f" ({model})" if model else ""
    raise ValueError(
      f"a language model{named} continues a prompt (involution-generate, or Predictor with "
      "text); it is not run on one prepared input at a time"
    )

  def preprocess_from_info(self, info: ModelInfo):
    self._continues_prompts(info.model)

  def predict_fn(self, model: nn.Module):
    self._continues_prompts()

  def prediction(self, output, example, size, class_names, top_k) -> dict:
    self._continues_prompts()

  def dataset(self, config, split: str) -> Dataset:
    return text.load_text_dataset(
      config.dataset, split, context=config.context, data_dir=config.data_dir
    )

  def preprocess(self, config) -> text.TokenPreprocess:
    return text.TokenPreprocess(config.context)

  def input_shape(self, config) -> tuple[int]:
    return (config.context,)

  @staticmethod
  def _per_token(logits, batch):
    weights = batch["mask"] * batch["valid"][:, None]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    correct = jnp.argmax(logits, -1) == batch["targets"]
    return losses * weights, correct * weights, weights

  def loss_fn(self, model: nn.Module, config) -> LossFn:
    def loss(variables, batch, rng):
      logits = model.apply(variables, batch["tokens"], train=True, rngs={"dropout": rng})
      losses, correct, weights = self._per_token(logits, batch)
      count = jnp.maximum(jnp.sum(weights), 1.0)
      metrics = {"accuracy": jnp.sum(correct) / count}
      return jnp.sum(losses) / count, (variables.get("batch_stats", {}), metrics)

    return loss

  def eval_fn(self, model: nn.Module) -> Callable[[dict, dict], dict]:
    def step(variables, batch):
      logits = model.apply(variables, batch["tokens"], train=False)
      losses, correct, weights = self._per_token(logits, batch)
      return dict(nll=jnp.sum(losses), correct=jnp.sum(correct), tokens=jnp.sum(weights))

    return step

  def summarize(self, outputs: Iterable[dict], dataset: Dataset) -> dict:
    totals = sum_tree(outputs)
    tokens = max(float(totals["tokens"]), 1.0)
    loss = float(totals["nll"]) / tokens
    return dict(
      loss=loss,
      bits_per_byte=loss / float(np.log(2)),  # a token is a byte
      accuracy=float(totals["correct"]) / tokens,
      tokens=int(totals["tokens"]),
    )

  def model_info(self, config, dataset: Dataset) -> ModelInfo:
    return model_info(
      self.name,
      config,
      dataset,
      context=config.context,
      corpus=dataset.source.corpus,
    )

  def serving_input(self, info: ModelInfo) -> ServingInput:
    return ServingInput(
      "tokens",
      (info.context,),
      "int32",
      f"the text's UTF-8 bytes, each byte a token (0-255), at most {info.context}; a "
      "shorter text is padded after its end (with any byte: positions only see earlier ones)",
      "logits (batch, positions, 256): position i's predict the byte after byte i, so the "
      "next byte after a text of n bytes is read at position n - 1",
    )


class TextClassification(TextTask):
  """Word sequences -> a class (a "pooled" sequence model); padding masked out."""

  name = "text_classification"
  train_metrics = ("accuracy",)

  def dataset(self, config, split: str) -> Dataset:
    return labelled_text.load_labelled_text(
      config.dataset,
      split,
      data_dir=config.data_dir,
      max_vocab=config.model_kwargs.vocab_size,
      text_column=config.get("text_column", "text"),
      label_column=config.get("label_column", "label"),
    )

  def preprocess(self, config) -> labelled_text.WordsPreprocess:
    return labelled_text.WordsPreprocess(config.context)

  def input_shape(self, config) -> tuple[int]:
    return (config.context,)

  def loss_fn(self, model: nn.Module, config) -> LossFn:
    def loss(variables, batch, rng):
      logits = model.apply(
        variables, batch["tokens"], train=True, mask=batch["mask"], rngs={"dropout": rng}
      )
      value = cross_entropy(logits, batch["label"], batch["valid"], config.label_smoothing)
      correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * batch["valid"])
      accuracy = correct / jnp.maximum(jnp.sum(batch["valid"]), 1)
      return value, (variables.get("batch_stats", {}), {"accuracy": accuracy})

    return loss

  def eval_fn(self, model: nn.Module) -> Callable[[dict, dict], dict]:
    def step(variables, batch):
      logits = model.apply(variables, batch["tokens"], train=False, mask=batch["mask"])
      labels, valid = batch["label"], batch["valid"]
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return dict(
        loss=jnp.sum(losses * valid),
        correct=jnp.sum((jnp.argmax(logits, -1) == labels) * valid),
        count=jnp.sum(valid),
      )

    return step

  def summarize(self, outputs: Iterable[dict], dataset: Dataset) -> dict:
    totals = sum_tree(outputs)
    count = max(float(totals["count"]), 1.0)
    return dict(
      loss=float(totals["loss"]) / count,
      accuracy=float(totals["correct"]) / count,
      count=int(totals["count"]),
    )

  def model_info(self, config, dataset: Dataset) -> ModelInfo:
    return model_info(
      self.name,
      config,
      dataset,
      class_names=list(dataset.class_names),
      context=config.context,
      vocabulary=list(dataset.source.vocabulary),
      vocabulary_sha256=dataset.source.vocabulary_sha256,
    )

  def serving_input(self, info: ModelInfo) -> ServingInput:
    return ServingInput(
      "tokens",
      (info.context,),
      "int32",
      "the lower-cased text split by the regular expression [a-z0-9']+|[^\\sa-z0-9'] "
      "(words, and each other character but white space); each piece's id is 2 + its "
      f"index in vocabulary, 1 where it is not there; the first {info.context} ids, then "
      "0 (padding) to the end",
      "logits (batch, classes): softmax for the classes' probabilities, in class_names' order",
    )

  def preprocess_from_info(self, info: ModelInfo) -> labelled_text.TextPreprocess:
    return labelled_text.TextPreprocess(info.context, info.vocabulary)

  def predict_fn(self, model: nn.Module):
    logits = self.serving_fn(model)
    return lambda variables, tokens: jax.nn.softmax(logits(variables, tokens), axis=-1)

  def prediction(self, probabilities, example, size, class_names, top_k) -> dict:
    """{"top": [{"class", "index", "probability"}, ...]}, the likeliest first."""
    return top_classes(probabilities, class_names, top_k)

  def serving_fn(self, model: nn.Module):
    """The logits (N, classes); the padding after each text (id 0) masked out, as in
    training (`WordsPreprocess`: an empty text keeps its first position)."""

    def logits(variables, tokens):
      length = jnp.maximum(jnp.sum(tokens != labelled_text.PAD, axis=1, keepdims=True), 1)
      mask = (jnp.arange(tokens.shape[1]) < length).astype(jnp.float32)
      return model.apply(variables, tokens, train=False, mask=mask)

    return logits
