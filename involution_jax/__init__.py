"""involution-jax: involution and RedNet in JAX / Flax.

    from involution_jax import Involution, RedNet, involution, rednet50
    involution_jax.list_models(), list_configs(), list_pretrained()   # what exists, by name

The package's rooms, lowest first: `host` (the machine: cache, workdir lock, console) <-
`ops` (the operator, pure JAX) <- `models` (Flax modules) and `data` <- `configs` <-
`weights` (checkpoints, official formats, the zoo, `ModelInfo`) <- `tasks` <- `training`,
`inference` and `nnx` <- `cli` (the commands). See docs/architecture.md.

The names below are imported on first use (PEP 562), so that the commands' `--help`
and the light rooms (`host`) do not pay for JAX and Flax.
"""

from __future__ import annotations

import importlib

# name -> the module that defines it
_EXPORTS = {
  "Involution": "involution_jax.models",
  "RedNet": "involution_jax.models",
  "create_model": "involution_jax.models",
  "rednet26": "involution_jax.models",
  "rednet38": "involution_jax.models",
  "rednet50": "involution_jax.models",
  "rednet101": "involution_jax.models",
  "rednet152": "involution_jax.models",
  "involution": "involution_jax.ops",
  "Predictor": "involution_jax.inference.predictor",
  "list_models": "involution_jax.models.registry",
  "list_configs": "involution_jax.configs",
  "list_pretrained": "involution_jax.weights.zoo",
}

__all__ = list(_EXPORTS)


# The sub-packages, imported when first reached as attributes (`involution_jax.models`).
_ROOMS = (
  "host",
  "ops",
  "models",
  "data",
  "configs",
  "weights",
  "tasks",
  "training",
  "inference",
  "nnx",
)


def __getattr__(name: str):
  if name in _ROOMS:
    return importlib.import_module(f"involution_jax.{name}")
  if name not in _EXPORTS:
    raise AttributeError(f"module 'involution_jax' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted({*__all__, *_ROOMS})
