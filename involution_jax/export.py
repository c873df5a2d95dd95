"""Deprecated alias of `involution_jax.inference.export` and `involution_jax.cli.export`:
import from there.

`python -m involution_jax.export` still runs involution-export.
"""

import warnings

from involution_jax.cli.export import *  # noqa: F403
from involution_jax.cli.export import main
from involution_jax.inference.export import *  # noqa: F403

warnings.warn(
  "involution_jax.export is deprecated: use "
  "involution_jax.inference.export / involution_jax.cli.export",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)

if __name__ == "__main__":
  raise SystemExit(main())
