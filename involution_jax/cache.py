"""The folder for downloads and built files.

`$INVOLUTION_JAX_CACHE`, default `~/.cache/involution_jax`.
"""

from __future__ import annotations

import os

CACHE_ENV = "INVOLUTION_JAX_CACHE"


def cache_dir() -> str:
  default = os.path.join(os.path.expanduser("~"), ".cache", "involution_jax")
  return os.environ.get(CACHE_ENV) or default
