"""Deprecated alias of `involution_jax.inference.predictor` and `involution_jax.cli.predict`:
import from there.

`python -m involution_jax.predict` still runs involution-predict.
"""

import warnings

from involution_jax.cli.predict import *  # noqa: F403
from involution_jax.cli.predict import main
from involution_jax.inference.predictor import *  # noqa: F403

warnings.warn(
  "involution_jax.predict is deprecated: use "
  "involution_jax.inference.predictor / involution_jax.cli.predict",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)

if __name__ == "__main__":
  raise SystemExit(main())
