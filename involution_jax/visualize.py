"""Deprecated alias of `involution_jax.inference.kernels` and `involution_jax.cli.visualize`:
import from there.

`python -m involution_jax.visualize` still runs involution-visualize.
"""

import warnings

from involution_jax.cli.visualize import *  # noqa: F403
from involution_jax.cli.visualize import main
from involution_jax.inference.kernels import *  # noqa: F403

warnings.warn(
  "involution_jax.visualize is deprecated: use "
  "involution_jax.inference.kernels / involution_jax.cli.visualize",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)

if __name__ == "__main__":
  raise SystemExit(main())
