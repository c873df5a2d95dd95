"""Deprecated alias of `involution_jax.training.evaluator` and `involution_jax.cli.eval`:
import from there.

`python -m involution_jax.eval` still runs involution-eval.
"""

import warnings

from involution_jax.cli.eval import *  # noqa: F403
from involution_jax.cli.eval import main
from involution_jax.training.evaluator import *  # noqa: F403

warnings.warn(
  "involution_jax.eval is deprecated: use "
  "involution_jax.training.evaluator / involution_jax.cli.eval",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)

if __name__ == "__main__":
  raise SystemExit(main())
