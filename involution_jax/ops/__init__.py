"""The involution operator in pure JAX (no Flax): checks, dispatch and implementations.

- `dispatch`: `involution(x, kernel, ...)`, argument checks, the method `auto` picks.
- `patches`: the unfold formulation, the reference.
- `primitive`: the JAX primitive behind the memory-lean methods (any order of
  differentiation, vmap, export).
- `xla`: the shift-and-accumulate implementation in plain XLA (every backend), tuned
  for 2-D SAME square windows; `xla_nd`: the same for 1-3 dimensions and any padding.
- `pallas`: the Triton kernels for GPUs.
- `fusion`: steering XLA's fusion (`computed_once`).
- `conv`: the 3x3 convolutions' op (a per-tap kernel gradient on CPU).
"""

from involution_jax.ops.dispatch import (
  METHODS,
  PADDINGS,
  involution,
  padding_pairs,
  resolve_method,
  validate,
)
from involution_jax.ops.fusion import computed_once
from involution_jax.ops.patches import (
  involution_patches,
  output_size,
  padded_output_size,
  patch_tensor_bytes,
)

__all__ = [
  "METHODS",
  "PADDINGS",
  "computed_once",
  "involution",
  "involution_patches",
  "output_size",
  "padded_output_size",
  "padding_pairs",
  "patch_tensor_bytes",
  "resolve_method",
  "validate",
]
