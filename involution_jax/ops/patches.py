"""The unfold formulation of involution: the reference, and the size of its patch tensor.

Shapes: x (B, H, W, C), kernel (B, Ho, Wo, G, K, K), out (B, Ho, Wo, C).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from involution_jax.ops.xla import accumulation_dtype


def output_size(size: int, stride: int) -> int:
  """Output extent of an involution with this stride: ceil(size / stride)."""
  return -(-size // stride)


def involution_patches(x: jax.Array, kernel: jax.Array, stride: int, dilation: int) -> jax.Array:
  """Reference formulation: extract (B, Ho, Wo, C*K*K) patches, then einsum."""
  b, h, w, c = x.shape
  _, ho, wo, groups, k, _ = kernel.shape
  pad = dilation * (k // 2)
  acc = accumulation_dtype(x.dtype)
  patches = lax.conv_general_dilated_patches(
    x,
    filter_shape=(k, k),
    window_strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    rhs_dilation=(dilation, dilation),
    dimension_numbers=("NHWC", "OIHW", "NHWC"),
    precision=lax.Precision.HIGHEST,
  )  # an identity filter: keep it exact
  # Patch features are ordered (channel, u, v).
  patches = patches.reshape(b, ho, wo, groups, c // groups, k, k)
  out = jnp.einsum(
    "bhwgcuv,bhwguv->bhwgc",
    patches,
    kernel,
    precision=lax.Precision.HIGHEST,
    preferred_element_type=acc,
  )
  return out.reshape(b, ho, wo, c).astype(x.dtype)


def patch_tensor_bytes(
  x_shape: tuple[int, ...], kernel_size: int, stride: int, itemsize: int = 4
) -> int:
  """Size of the (B, Ho, Wo, C*K*K) patch tensor the unfold formulation builds."""
  b, h, w, c = x_shape
  return b * output_size(h, stride) * output_size(w, stride) * c * kernel_size**2 * itemsize
