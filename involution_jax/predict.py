"""Classify image files with a trained or converted model.

    involution-predict WEIGHTS IMAGE_OR_FOLDER [...] [--top-k 5] [--batch-size 32] [--json]

WEIGHTS: a training workdir or checkpoint folder, or official `.pth` /
`.pdparams` weights. Images are prepared by the same function training's
evaluation uses (`data.Preprocess.eval`); the model is compiled once per batch
shape (the last batch is padded). Unreadable files are reported, the others
still classified.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from involution_jax import data
from involution_jax.evaluate import load_weights, model_from_info


def preprocess_from_info(info: dict) -> data.Preprocess:
  return data.Preprocess(info["image_size"], tuple(info["mean"]), tuple(info["std"]),
                         eval_crop=info.get("eval_crop", 1.0))


def image_files(paths: Iterable[str]) -> list[str]:
  """Files as given, folders expanded (recursively, sorted) to their image files."""
  out = []
  for path in paths:
    if os.path.isdir(path):
      for root, _, names in sorted(os.walk(path)):
        out += [os.path.join(root, n) for n in sorted(names)
                if n.lower().endswith(data.IMAGE_EXTENSIONS)]
    elif os.path.exists(path):
      out.append(path)
    else:
      raise FileNotFoundError(f"no such image or folder: {path}")
  return out


def _read_error(path: str) -> str:
  try:
    with Image.open(path) as image:
      image.convert("RGB")
    return "unreadable image"
  except Exception as e:  # the reason to report
    return f"{type(e).__name__}: {e}"


class Predictor:
  """A model with its weights, input preparation and class names, ready to classify."""

  def __init__(self, variables: dict, info: dict, batch_size: int = 32):
    self.info, self.batch_size = info, batch_size
    self.preprocess = preprocess_from_info(info)
    self.class_names = list(info.get("class_names") or range(info["num_classes"]))
    model = model_from_info(info)
    self.variables = jax.device_put(variables)
    self._probabilities = jax.jit(
        lambda v, x: jax.nn.softmax(model.apply(v, x, train=False), axis=-1))

  @classmethod
  def load(cls, weights: str, batch_size: int = 32) -> "Predictor":
    return cls(*load_weights(weights), batch_size=batch_size)

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """images: (N, S, S, 3) prepared -> (N, num_classes), in fixed-size padded batches."""
    out = []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      padded = np.zeros((self.batch_size, *chunk.shape[1:]), np.float32)
      padded[:len(chunk)] = chunk
      out.append(np.asarray(self._probabilities(self.variables, jnp.asarray(padded)))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)

  def classify(self, paths: Sequence[str], top_k: int = 5) -> list[dict]:
    """[{"path", "top": [{"class", "index", "probability"}, ...]} or {"path", "error"}]."""
    examples = [self.preprocess.eval({"path": p, "label": 0}) for p in paths]
    readable = [i for i, e in enumerate(examples) if e["valid"]]
    probs = self.probabilities(np.stack([examples[i]["image"] for i in readable])
                               if readable else np.zeros((0, 1, 1, 3), np.float32))
    results = [{"path": p, "error": _read_error(p)} for p in paths]
    k = min(top_k, len(self.class_names))
    for i, p in zip(readable, probs):
      best = np.argsort(-p)[:k]
      results[i] = {"path": paths[i], "top": [
          {"class": str(self.class_names[j]), "index": int(j), "probability": float(p[j])}
          for j in best]}
    return results


def format_table(results: list[dict]) -> str:
  lines = []
  for r in results:
    if "error" in r:
      lines.append(f"{r['path']}: ERROR {r['error']}")
      continue
    lines.append(r["path"])
    lines += [f"  {t['probability']:7.2%}  {t['class']}" for t in r["top"]]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="involution-predict", description=__doc__.split("\n\n")[0])
  parser.add_argument("weights", help="training workdir / checkpoint folder, or .pth / .pdparams")
  parser.add_argument("images", nargs="+", help="image files or folders")
  parser.add_argument("--top-k", type=int, default=5)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  args = parser.parse_args(argv)
  try:
    files = image_files(args.images)
  except FileNotFoundError as e:
    parser.error(str(e))
  if not files:
    parser.error(f"no image files in {args.images}")
  results = Predictor.load(args.weights, args.batch_size).classify(files, args.top_k)
  print(json.dumps(results, indent=2) if args.json else format_table(results))
  return 1 if all("error" in r for r in results) else 0


def run() -> None:
  """Console script `involution-predict`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
