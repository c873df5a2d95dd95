"""ImageNet-1k class names (short names, in the standard class-index order)."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def class_names() -> tuple[str, ...]:
  """1,000 names; index i is the class the official models call i."""
  text = resources.files("involution_jax").joinpath("imagenet_classes.txt").read_text()
  names = tuple(line for line in text.splitlines() if line)
  assert len(names) == 1000, len(names)
  return names
