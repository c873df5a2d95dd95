"""Deprecated alias of `involution_jax.weights.convert` and `involution_jax.cli.convert`:
import from there.

`python -m involution_jax.convert` still runs involution-convert.
"""

import warnings

from involution_jax.cli.convert import *  # noqa: F403
from involution_jax.cli.convert import main
from involution_jax.weights.convert import *  # noqa: F403

warnings.warn(
  "involution_jax.convert is deprecated: use "
  "involution_jax.weights.convert / involution_jax.cli.convert",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)

if __name__ == "__main__":
  raise SystemExit(main())
