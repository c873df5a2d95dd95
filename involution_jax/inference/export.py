"""Export a model with its weights to one `jax.export` artifact (symbolic batch).

    involution-export WEIGHTS OUT.jaxexport [--platforms cpu,cuda,tpu]

writes OUT.jaxexport (the serialised StableHLO program, weights embedded) and
OUT.jaxexport.json (input size, normalisation, class names). Running it needs
only jax, not this package:

    exported = jax.export.deserialize(open("model.jaxexport", "rb").read())
    logits = exported.call(images)        # (N, S, S, 3) float32, normalised; any N

To serve: load once and call from any Python server. `--platforms` makes one
artifact for several platforms (recorded in the .json); it runs the op's XLA
formulation, never the Pallas kernels, whose Triton calls cannot be serialised. With TensorFlow
installed, `jax2tf.convert(exported.call, polymorphic_shapes=["(b, S, S, 3)"])`
wrapped in a `tf.Module` saves a SavedModel for TF Serving.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from involution_jax import portability
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
  """The eval-mode forward pass, weights embedded, batch dimension symbolic.

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
  model = model_from_info(info)
  size = info.image_size
  batch = jax.export.symbolic_shape("batch")[0]
  spec = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  forward = jax.jit(lambda x: model.apply(variables, x, train=False))
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


def save(exported: jax.export.Exported, info: ModelInfo, path: str) -> None:
  with open(path, "wb") as f:
    f.write(exported.serialize())
  recorded = (*PREPROCESSING, "class_names", "num_classes", "model")
  metadata = {k: v for k, v in info.to_json().items() if k in recorded}
  metadata["platforms"] = list(exported.platforms)
  with open(path + METADATA_SUFFIX, "w") as f:
    json.dump(metadata, f, indent=2)


def load(path: str) -> tuple[Callable[[np.ndarray], jax.Array], dict]:
  """(logits function, metadata) of an exported artifact; uses only jax."""
  with open(path, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with open(path + METADATA_SUFFIX) as f:
    metadata = json.load(f)
  return exported.call, metadata
