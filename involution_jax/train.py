"""Deprecated alias of `involution_jax.training.trainer` and `involution_jax.cli.train`:
import from there.

`python -m involution_jax.train` still runs involution-train.
"""

import warnings

from involution_jax.cli.train import *  # noqa: F403
from involution_jax.cli.train import main
from involution_jax.training.trainer import *  # noqa: F403

warnings.warn(
  "involution_jax.train is deprecated: use "
  "involution_jax.training.trainer / involution_jax.cli.train",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)

if __name__ == "__main__":
  raise SystemExit(main())
