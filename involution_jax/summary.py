"""Deprecated alias of `involution_jax.weights.summary` and `involution_jax.cli.summary`:
import from there.

`python -m involution_jax.summary` still runs involution-summary.
"""

import warnings

from involution_jax.cli.summary import *  # noqa: F403
from involution_jax.cli.summary import main
from involution_jax.weights.summary import *  # noqa: F403

warnings.warn(
  "involution_jax.summary is deprecated: use "
  "involution_jax.weights.summary / involution_jax.cli.summary",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)

if __name__ == "__main__":
  raise SystemExit(main())
