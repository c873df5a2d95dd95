"""`Predictor`: a trained or converted model, ready to predict classes, masks or boxes.

    predictor = Predictor.load("runs/default")   # anything `weights.load_weights` reads
    results = predictor.predict(["digit7.png", pil_image, pixels])   # one dict per image

Weights: a training workdir or checkpoint folder, official `.pth` / `.pdparams`
weights, or a pretrained name. Images (files, PIL images, or arrays of raw pixel values)
are prepared by the same function the task's evaluation uses, with the preprocessing
the weights record; the model is compiled once per batch shape (the last batch is
padded). Unreadable files are reported, the others still predicted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TypedDict

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from involution_jax.data.classification import IMAGE_EXTENSIONS
from involution_jax.data.images import read_rgb, to_rgb
from involution_jax.data.text import read_text
from involution_jax.host.console import progress
from involution_jax.inference.generation import continue_text
from involution_jax.tasks import task_named
from involution_jax.weights import (
  ModelInfo,
  fitting_their_description,
  load_weights,
  model_from_info,
)


def image_files(paths: Iterable[str]) -> list[str]:
  """Files as given, folders expanded (recursively, sorted) to their image files."""
  out = []
  for path in paths:
    if os.path.isdir(path):
      for root, _, names in sorted(os.walk(path)):
        out += [
          os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    elif os.path.exists(path):
      out.append(path)
    else:
      raise FileNotFoundError(f"no such image or folder: {path}")
  return out


def _read_error(path: str) -> str:
  try:
    read_rgb(path)
    return "unreadable image"
  except Exception as e:  # the reason to report
    return f"{type(e).__name__}: {e}"


# What a language model's prediction adds to a prompt, unless `length` says otherwise.
CONTINUATION_BYTES = 200


# One of a classification's top classes (functional form: "class" is a keyword).
ClassScore = TypedDict("ClassScore", {"class": str, "index": int, "probability": float})
# One detected object, in the input image's pixels: box (x1, y1, x2, y2), the class's name
# and index, its score, and for Mask R-CNN its mask (H, W) bool.
Detection = TypedDict(
  "Detection",
  {"class": str, "index": int, "score": float, "box": list[float], "mask": np.ndarray},
  total=False,
)


class Result(TypedDict, total=False):
  """What `Predictor.predict` returns per input: where it came from, then the task's
  fields: "top" (classification, text classification), "mask" and "class_fractions"
  (segmentation), "detections" (detection), "continuation" (a language model); or
  "error" for an input that could not be read."""

  path: str  # a file's input
  text: str  # a text's input
  top: list[ClassScore]
  mask: np.ndarray  # (H, W) class indices at the image's size
  class_fractions: dict[str, float]
  detections: list[Detection]
  continuation: str
  error: str


# An image as `Predictor.predict` takes it: a file's path, a PIL image, or raw pixel values
# (0-255) as a NumPy or JAX array, (H, W, 3) RGB, (H, W, 4) RGBA, (H, W, 1) or (H, W) grey.
ImageInput = str | os.PathLike | Image.Image | np.ndarray | jax.Array


def _pixels(image, position: int) -> np.ndarray:
  """An in-memory image as (H, W, 3) uint8 RGB; a ValueError names a shape or values that
  are not an image's raw pixels."""
  if isinstance(image, Image.Image):
    return np.asarray(to_rgb(image))  # as a file of it is read (16-bit grey scaled)
  pixels = np.asarray(image)
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3, 4) or 0 in pixels.shape:
    raise ValueError(
      f"input {position}: an image array must be (H, W, 3), (H, W, 4), (H, W, 1) or "
      f"(H, W), got shape {pixels.shape}"
    )
  if pixels.dtype != np.uint8:
    if pixels.dtype == bool or not np.issubdtype(pixels.dtype, np.number):
      raise ValueError(f"input {position}: pixel values must be numbers, got {pixels.dtype}")
    if not (np.all(np.isfinite(pixels)) and pixels.min() >= 0 and pixels.max() <= 255):
      raise ValueError(
        f"input {position}: raw pixel values must be in [0, 255], got "
        f"[{pixels.min()}, {pixels.max()}] (the predictor normalises them itself)"
      )
    if np.issubdtype(pixels.dtype, np.floating) and 0 < pixels.max() <= 1:
      raise ValueError(
        f"input {position}: float pixel values all in [0, 1] look scaled; pass raw values "
        "in [0, 255] (e.g. pixels * 255)"
      )
    pixels = np.round(pixels).astype(np.uint8)
  if pixels.shape[-1] == 1:
    return np.repeat(pixels, 3, axis=-1)
  return pixels[..., :3] if pixels.shape[-1] == 4 else pixels


def _record(item, position: int) -> dict:
  """A `predict` input as the record a task's preprocessing reads."""
  if isinstance(item, str | os.PathLike):
    return {"path": os.fspath(item), "label": 0}
  return {"image": _pixels(item, position), "label": 0}


class Predictor:
  """A model with its weights, input preparation and class names, ready to predict.

  Image models predict on image files (`predict`); a text classifier on text files
  (`predict`) or texts (`predict_texts`); a language model continues each file's text or
  each text (`continuation`).
  """

  def __init__(self, variables: dict, info: ModelInfo, batch_size: int = 32, quiet: bool = False):
    self.info, self.batch_size, self.quiet = info, batch_size, quiet
    self.task = task_named(info.task)
    self.class_names = info.names
    self.variables = jax.device_put(variables)
    self.model = model_from_info(info)
    if not self.task.generates_text:  # a language model continues prompts instead
      self.preprocess = self.task.preprocess_from_info(info)
      self._predict = jax.jit(self.task.predict_fn(self.model))

  @classmethod
  def load(cls, weights: str, batch_size: int = 32, quiet: bool = False) -> Predictor:
    """`weights`: anything `weights.load_weights` reads; `quiet`: no progress bars."""
    return cls(*load_weights(weights, quiet=quiet), batch_size=batch_size, quiet=quiet)

  def run(self, images: np.ndarray):
    """Prepared inputs (N, ...): images (N, H, W, 3), or token ids (N, T) -> the task's
    outputs for each, in batches of
    `batch_size`, or of the power of two >= N when that is smaller: memory follows the
    images, not the flag, and a predictor compiles at most log2(batch_size) + 1 sizes."""
    outs = []
    batch = min(self.batch_size, 1 << max(len(images) - 1, 0).bit_length())
    starts = range(0, len(images), batch)
    for start in progress(starts, desc="predict", unit="batch", leave=False, quiet=self.quiet):
      chunk = images[start : start + batch]
      padded = np.zeros((batch, *chunk.shape[1:]), chunk.dtype)
      padded[: len(chunk)] = chunk
      with fitting_their_description():
        out = jax.device_get(self._predict(self.variables, jnp.asarray(padded)))
      outs.append(jax.tree.map(lambda a: a[: len(chunk)], out))
    return jax.tree.map(lambda *a: np.concatenate(a), *outs) if outs else None

  def predict(
    self, inputs: ImageInput | Sequence[ImageInput], top_k: int = 5, **generation
  ) -> list[Result]:
    """One `Result` per input, in order: {"path" (a file's), "error"} or the task's result.

    inputs: image files, PIL images, or arrays of raw pixel values (0-255; (H, W, 3) RGB,
    (H, W, 4), (H, W, 1) or (H, W); a (N, H, W, C) array is N images), or a single one of
    these; for a text model, text files. Each image is prepared as the weights record
    (size, mean, std, crop): pass pixels as read, not normalised.
    classification and text classification: "top" [{"class", "index", "probability"}];
    segmentation: "mask" (H, W) class indices at the image's size and "class_fractions";
    detection: "detections" [{"class", "index", "score", "box" (x1, y1, x2, y2)}];
    a language model: "continuation", the text after the file's (`generation`: `length`,
    `temperature`, `top_k`, `seed` of `generation.continue_text`).
    """
    if isinstance(inputs, str | os.PathLike | Image.Image):
      inputs = [inputs]
    elif not isinstance(inputs, list | tuple) and hasattr(inputs, "__array__"):
      inputs = np.asarray(inputs)  # a JAX (or other) array: one image, or a batch
    if isinstance(inputs, np.ndarray) and inputs.ndim in (2, 3):
      inputs = [inputs]
    records = [_record(item, i) for i, item in enumerate(inputs)]
    if self.task.input_key != "image" and any("image" in r for r in records):
      raise ValueError(f"a {self.info.task} model predicts on text files or texts, not images")
    return self._results(records, top_k, generation)

  def predict_texts(self, texts: Sequence[str], top_k: int = 5, **generation) -> list[dict]:
    """As `predict`, for texts given as strings: one dict per text, {"text", ...}."""
    if self.task.input_key != "tokens":
      raise ValueError(f"a {self.info.task} model predicts on image files, not on texts")
    return self._results([{"text": t, "label": 0} for t in texts], top_k, generation)

  def _results(self, records: list[dict], top_k: int, generation: dict) -> list[Result]:
    named = [{k: r[k] for k in ("path", "text") if k in r} for r in records]
    if self.task.generates_text:
      generation = {"length": CONTINUATION_BYTES, **generation}
      prompts = [r["text"] if "text" in r else read_text(r["path"]) for r in records]
      return [
        {**n, "continuation": "".join(continue_text(self.model, self.variables, p, **generation))}
        for n, p in zip(named, prompts)
      ]
    unit = "text" if self.task.input_key == "tokens" else "image"
    examples = [
      self.preprocess.eval(r)
      for r in progress(records, desc="read", unit=unit, leave=False, quiet=self.quiet)
    ]
    readable = [i for i, e in enumerate(examples) if e["valid"]]
    results = [
      None if e["valid"] else {**n, "error": _read_error(n["path"])}
      for n, e in zip(named, examples)
    ]
    if not readable:
      return results
    outputs = self.run(np.stack([examples[i][self.task.input_key] for i in readable]))
    for row, i in enumerate(readable):
      out = jax.tree.map(lambda a: a[row], outputs)
      size = _size(records[i]) if self.task.input_key == "image" else None
      found = self.task.prediction(out, examples[i], size, self.class_names, top_k)
      results[i] = {**named[i], **found}
    return results

  def classify(self, paths: Sequence[str], top_k: int = 5) -> list[Result]:
    return self.predict(paths, top_k)


def _size(record: dict) -> tuple[int, int]:
  """(width, height) of a record's image as given."""
  if "image" in record:
    return record["image"].shape[1], record["image"].shape[0]
  with Image.open(record["path"]) as image:
    return image.size
