"""Deprecated alias of `involution_jax.inference.generation` and `involution_jax.cli.generate`:
import from there.

`python -m involution_jax.generate` still runs involution-generate.
"""

import warnings

from involution_jax.cli.generate import *  # noqa: F403
from involution_jax.cli.generate import main
from involution_jax.inference.generation import *  # noqa: F403

warnings.warn(
  "involution_jax.generate is deprecated: use "
  "involution_jax.inference.generation / involution_jax.cli.generate",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)

if __name__ == "__main__":
  raise SystemExit(main())
