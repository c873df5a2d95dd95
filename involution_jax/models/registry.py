"""Models by name, for configs and checkpoints: `create_model("rednet50", num_classes=10)`."""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable

import flax.linen as nn

from involution_jax.models.detection import RetinaNet
from involution_jax.models.rcnn import TwoStageDetector
from involution_jax.models.rednet import RedNet, rednet26, rednet38, rednet50, rednet101, rednet152
from involution_jax.models.segmentation import SemanticFPN
from involution_jax.models.sequence import SequenceModel
from involution_jax.models.upernet import UPerNet

# "rednet": the bare module, configured entirely by keyword (e.g. small stage_sizes).
MODELS: dict[str, Callable[..., nn.Module]] = {
  "rednet": RedNet,
  "rednet26": rednet26,
  "rednet38": rednet38,
  "rednet50": rednet50,
  "rednet101": rednet101,
  "rednet152": rednet152,
  "semantic_fpn": SemanticFPN,
  "retinanet": RetinaNet,
  "faster_rcnn": functools.partial(TwoStageDetector, with_mask=False),
  "mask_rcnn": functools.partial(TwoStageDetector, with_mask=True),
  "upernet": UPerNet,
  "sequence": SequenceModel,
}


def list_models(pattern: str = "*") -> list[str]:
  """The registry's model names (`MODELS`) matching the shell-style `pattern`, sorted:
  `list_models("rednet*")`. Each builds with `create_model(name, **fields)`."""
  return sorted(name for name in MODELS if fnmatch.fnmatchcase(name, pattern))


def create_model(name: str, **overrides) -> nn.Module:
  """A model by registry name (see `MODELS`), its fields overridden."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
  return MODELS[name](**overrides)
