"""Deprecated alias of `involution_jax.cli.plot`:
import from there.

`python -m involution_jax.plot` still runs involution-plot.
"""

import warnings

from involution_jax.cli.plot import *  # noqa: F403
from involution_jax.cli.plot import main

warnings.warn(
  "involution_jax.plot is deprecated: use involution_jax.cli.plot",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)

if __name__ == "__main__":
  raise SystemExit(main())
