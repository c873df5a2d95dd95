"""The folder for downloads and built files, and the digest that checks them.

`$INVOLUTION_JAX_CACHE`, default `~/.cache/involution_jax`.
"""

from __future__ import annotations

import hashlib
import os

CACHE_ENV = "INVOLUTION_JAX_CACHE"


def cache_dir() -> str:
  default = os.path.join(os.path.expanduser("~"), ".cache", "involution_jax")
  return os.environ.get(CACHE_ENV) or default


def sha256_of(path: str | os.PathLike) -> str:
  """The SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
  sha = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      sha.update(chunk)
  return sha.hexdigest()
