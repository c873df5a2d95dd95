"""Export any trained model with its weights to one `jax.export` artifact (symbolic batch).

    involution-export WEIGHTS OUT.jaxexport [--platforms cpu,cuda,tpu]

writes OUT.jaxexport (the serialised StableHLO program, weights embedded) and
OUT.jaxexport.json: the task, the input (name, shape with the symbolic batch, dtype, how
to prepare it), what it returns (in words, and every output's shape and dtype), class
names, and the normalisation (images) or the context and vocabulary (text). Running it
needs only jax, not this package:

    exported = jax.export.deserialize(open("model.jaxexport", "rb").read())
    outputs = exported.call(inputs)       # any batch size

What a model takes and returns is its task's (`Task.serving_input`, `Task.serving_fn`):
a classifier's logits for normalised images; a segmentation model's class per pixel; a
detector's fixed number of boxes, scores, classes and valid flags (and Mask R-CNN's mask
probabilities); a language model's logits per position for byte tokens; a text classifier's
logits for word ids (its vocabulary in the .json).

To serve: load once and call from any Python server. `--platforms` makes one artifact
for several platforms (recorded in the .json); it runs the op's XLA formulation, never
the Pallas kernels, whose Triton calls cannot be serialised. With TensorFlow installed,
`jax2tf.convert(exported.call, polymorphic_shapes=["(b, ...)"])` wrapped in a
`tf.Module` saves a SavedModel for TF Serving.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence

import jax
import numpy as np

from involution_jax import portability
from involution_jax.tasks import task_named
from involution_jax.weights import (
  PREPROCESSING,
  ModelInfo,
  fitting_their_description,
  model_from_info,
)

METADATA_SUFFIX = ".json"


def export_model(
  variables: dict, info: ModelInfo, platforms: Sequence[str] | None = None
) -> jax.export.Exported:
  """The model's serving function (its task's), weights embedded, batch dimension
  symbolic.

  `platforms`: some of "cpu", "cuda", "rocm", "tpu" (default: this machine's);
  one artifact then runs on each. The op runs its XLA formulation ("shift")
  even in a model trained with method="pallas": Triton kernels cannot be
  serialised, and the two agree to float rounding.

  Raises:
    ValueError: an unknown platform, or a program one of them cannot run.
  """
  if platforms is not None:
    platforms = portability.check_platforms(platforms)
  if info.model_kwargs.get("method") == "pallas":
    info = dataclasses.replace(info, model_kwargs=dict(info.model_kwargs, method="shift"))
  task = task_named(info.task)
  serve = task.serving_fn(model_from_info(info))
  given = task.serving_input(info)
  batch = jax.export.symbolic_shape("batch")[0]
  spec = jax.ShapeDtypeStruct((batch, *given.shape), np.dtype(given.dtype))
  forward = jax.jit(lambda x: serve(variables, x))
  with fitting_their_description():
    exported = jax.export.export(forward, platforms=platforms)(spec)
  text = exported.mlir_module()
  for platform in exported.platforms:
    problems = portability.unportable_ops(text, platform)
    if problems:
      raise portability.PortabilityError(
        f"the exported model cannot run on {platform}: {'; '.join(problems)}"
      )
  return exported


def _described(aval) -> dict:
  """An array's shape (the symbolic batch as "batch") and dtype, as JSON."""
  shape = [d if isinstance(d, int) else str(d) for d in aval.shape]
  return {"shape": shape, "dtype": str(aval.dtype)}


def metadata(exported: jax.export.Exported, info: ModelInfo) -> dict:
  """What the .json beside an artifact says: enough to prepare its input and read its
  outputs without this package."""
  given = task_named(info.task).serving_input(info)
  recorded = info.to_json()
  out = {
    "task": info.task,
    "model": info.model,
    "num_classes": info.num_classes,
    "class_names": info.names,
    "input": {
      "name": given.name,
      **_described(exported.in_avals[0]),
      "preparation": given.preparation,
    },
    "returns": given.returns,
    "outputs": jax.tree.map(_described, jax.tree.unflatten(exported.out_tree, exported.out_avals)),
    **{k: recorded[k] for k in (*PREPROCESSING, "context", "vocabulary") if k in recorded},
    "platforms": list(exported.platforms),
  }
  return out


def save(exported: jax.export.Exported, info: ModelInfo, path: str) -> dict:
  """Writes the artifact to `path` and its `metadata` to `path` + ".json"; returns the
  metadata."""
  described = metadata(exported, info)
  with open(path, "wb") as f:
    f.write(exported.serialize())
  with open(path + METADATA_SUFFIX, "w") as f:
    json.dump(described, f, indent=2)
  return described


def load(path: str) -> tuple[Callable[[np.ndarray], object], dict]:
  """(the model's function, metadata) of an exported artifact; uses only jax."""
  with open(path, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with open(path + METADATA_SUFFIX) as f:
    metadata = json.load(f)
  return exported.call, metadata
