"""Deprecated alias of `involution_jax.training.curves` and `involution_jax.cli.plot`:
import from there.

`python -m involution_jax.plot` still runs involution-plot.
"""

import warnings

from involution_jax.cli.plot import *  # noqa: F403
from involution_jax.cli.plot import main
from involution_jax.training.curves import *  # noqa: F403

warnings.warn(
  "involution_jax.plot is deprecated: use involution_jax.training.curves / involution_jax.cli.plot",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)

if __name__ == "__main__":
  raise SystemExit(main())
