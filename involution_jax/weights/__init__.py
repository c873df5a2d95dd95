"""Weights from wherever they are: training checkpoints, converted or official files,
or a pretrained model's name.

`load_weights` is the one loader: a weights path or name -> (variables, `ModelInfo`);
training (`init_from`), evaluation, prediction, export and the kernel pictures all load
through it. `model_from_info` and `preprocess_from_info` rebuild the model and its input
preparation from the info a checkpoint carries.

    checkpoints   Orbax checkpoints: the training state and the model info beside it
    convert       official layouts <-> Flax variables, `load_weights`, `write_weights`
    mmcls, paddle the official PyTorch (mmcls) and PaddleClas names and layouts
    zoo           pretrained names, their sources and the download cache
    pretrained    `load("rednet50")`: a pretrained RedNet in one call
    info          `ModelInfo`, what a checkpoint records of its model -> model, input preparation
"""

from involution_jax.weights.convert import load_weights, paths_read
from involution_jax.weights.info import (
  PREPROCESSING,
  ModelInfo,
  fitting_their_description,
  model_from_info,
  preprocess_from_info,
)

__all__ = [
  "PREPROCESSING",
  "ModelInfo",
  "fitting_their_description",
  "load_weights",
  "model_from_info",
  "paths_read",
  "preprocess_from_info",
]
