"""Weights from wherever they are: training checkpoints, converted or official files,
or a pretrained model's name.

`load_weights` is the one loader: a weights path or name -> (variables, `ModelInfo`);
training (`init_from`), evaluation, prediction, export and the kernel pictures all load
through it. `model_from_info` rebuilds the model from the info a checkpoint carries (its
input preparation is its task's `preprocess_from_info`).

    checkpoints   Orbax checkpoints: the training state and the model info beside it
    convert       official layouts <-> Flax variables, `load_weights`, `write_weights`
    mmcls, paddle the official PyTorch (mmcls) and PaddleClas names and layouts
    zoo           pretrained names, their sources and the download cache
    pretrained    `load("rednet50")`: a pretrained RedNet in one call
    info          `ModelInfo`, what a checkpoint records of its model; the model it describes
"""

import importlib

# Imported on first use (PEP 562): `weights.zoo` or `weights.paddle` alone stays light (no
# Orbax, no Flax), which `involution-summary` and the official-file readers start faster for.
_EXPORTS = {
  "load_weights": "convert",
  "paths_read": "convert",
  "PREPROCESSING": "info",
  "ModelInfo": "info",
  "UnreadableInfo": "info",
  "fitting_their_description": "info",
  "model_from_info": "info",
}


def __getattr__(name: str):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
  "PREPROCESSING",
  "ModelInfo",
  "UnreadableInfo",
  "fitting_their_description",
  "load_weights",
  "model_from_info",
  "paths_read",
]
