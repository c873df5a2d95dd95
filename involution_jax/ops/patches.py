"""The unfold formulation of involution: the reference, and the size of its patch tensor.

Shapes: x (B, *S, C), kernel (B, *O, G, *W), out (B, *O, C), for N = len(S)
spatial dimensions; padding is N explicit (low, high) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from involution_jax.ops.xla import accumulation_dtype

# Dimension names of conv_general_dilated_patches for 1-, 2- and 3-D inputs.
_LAYOUTS = {1: ("NWC", "OIW"), 2: ("NHWC", "OIHW"), 3: ("NDHWC", "OIDHW")}


def output_size(size: int, stride: int) -> int:
  """Output extent of a SAME or CAUSAL involution with this stride: ceil(size / stride)."""
  return -(-size // stride)


def padded_output_size(
  size: int, window: int, stride: int, dilation: int, low: int, high: int
) -> int:
  """Output extent with explicit padding: floor((size + low + high - d*(K-1) - 1) / s) + 1."""
  return (size + low + high - dilation * (window - 1) - 1) // stride + 1


def involution_patches(
  x: jax.Array,
  kernel: jax.Array,
  stride: Sequence[int],
  dilation: Sequence[int],
  padding: Sequence[tuple[int, int]],
) -> jax.Array:
  """Reference formulation: extract (B, *O, C * prod(W)) patches, then einsum."""
  n = x.ndim - 2
  b, c = x.shape[0], x.shape[-1]
  out_shape, groups, window = kernel.shape[1 : n + 1], kernel.shape[n + 1], kernel.shape[n + 2 :]
  lhs, rhs = _LAYOUTS[n]
  patches = lax.conv_general_dilated_patches(
    x,
    filter_shape=window,
    window_strides=tuple(stride),
    padding=tuple(map(tuple, padding)),
    rhs_dilation=tuple(dilation),
    dimension_numbers=(lhs, rhs, lhs),
    precision=lax.Precision.HIGHEST,
  )  # an identity filter: keep it exact
  # Patch features are ordered (channel, *window).
  patches = patches.reshape(b, *out_shape, groups, c // groups, int(np.prod(window)))
  out = jnp.einsum(
    "b...gcw,b...gw->b...gc",
    patches,
    kernel.reshape(kernel.shape[: n + 2] + (-1,)),
    precision=lax.Precision.HIGHEST,
    preferred_element_type=accumulation_dtype(x.dtype),
  )
  return out.reshape(b, *out_shape, c).astype(x.dtype)


def patch_tensor_bytes(
  x_shape: tuple[int, ...],
  kernel_size: int | Sequence[int],
  stride: int | Sequence[int],
  itemsize: int = 4,
) -> int:
  """Size of the (B, *O, C * prod(W)) patch tensor the unfold formulation builds (SAME)."""
  n = len(x_shape) - 2
  window = (kernel_size,) * n if isinstance(kernel_size, int) else tuple(kernel_size)
  strides = (stride,) * n if isinstance(stride, int) else tuple(stride)
  positions = np.prod([output_size(s, st) for s, st in zip(x_shape[1:-1], strides)])
  return int(x_shape[0] * positions * x_shape[-1] * np.prod(window) * itemsize)
