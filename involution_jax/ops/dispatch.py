"""The involution operator on NHWC arrays (Li et al., CVPR 2021): checks and dispatch.

Spatial-specific, channel-agnostic: the K x K kernel at output pixel (i, j) is
shared by the channels of a group,

    out[b, i, j, c] = sum_{u, v} kernel[b, i, j, g(c), u, v]
                      * x[b, i*s + (u - K//2)*d, j*s + (v - K//2)*d, c]

with g(c) = c // (C // G) and zeros outside the image.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from involution_jax.ops import pallas
from involution_jax.ops.patches import involution_patches, output_size
from involution_jax.ops.primitive import involution_primitive

METHODS = ("auto", "patches", "shift", "pallas")


def _positive_int(name: str, value) -> int:
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(f"{name} must be an int >= 1, got {value!r}") from None
  if value < 1:
    raise ValueError(f"{name} must be an int >= 1, got {value}")
  return value


def validate(
  x: jax.Array, kernel: jax.Array, stride: int, dilation: int, method: str
) -> tuple[int, int, str]:
  """Checks shapes, dtypes and options; returns (stride, dilation, method)."""
  stride = _positive_int("stride", stride)
  dilation = _positive_int("dilation", dilation)
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
  if jnp.ndim(x) != 4:
    raise ValueError(f"x must have rank 4 (B, H, W, C), got shape {jnp.shape(x)}")
  if jnp.ndim(kernel) != 6:
    raise ValueError(f"kernel must have rank 6 (B, Ho, Wo, G, K, K), got shape {jnp.shape(kernel)}")
  for name, a in (("x", x), ("kernel", kernel)):
    if not jnp.issubdtype(a.dtype, jnp.floating):
      raise ValueError(f"{name} must be floating point, got dtype {a.dtype}")
  b, h, w, c = x.shape
  kb, ho, wo, groups, kh, kw = kernel.shape
  if kh != kw:
    raise ValueError(f"kernel window must be square, got {kh} x {kw} (kernel shape {kernel.shape})")
  if kh % 2 == 0:
    raise ValueError(f"kernel size K must be odd, got K={kh} (kernel shape {kernel.shape})")
  if kb != b:
    raise ValueError(f"kernel batch {kb} != x batch {b} (x {x.shape}, kernel {kernel.shape})")
  expected = (output_size(h, stride), output_size(w, stride))
  if (ho, wo) != expected:
    raise ValueError(
      f"kernel spatial shape {(ho, wo)} does not match x {x.shape} with "
      f"stride {stride}: expected (ceil(H/s), ceil(W/s)) = {expected}"
    )
  if groups < 1 or c % groups:
    raise ValueError(
      f"channels C={c} must be divisible by the kernel's group "
      f"count G={groups} (x {x.shape}, kernel {kernel.shape})"
    )
  if method == "pallas":
    problem = pallas.supported(x.shape, kernel.shape)
    if problem:
      raise ValueError(f"method 'pallas': {problem}; use method 'shift'")
    if jax.default_backend() == "tpu":
      raise ValueError("method 'pallas' targets GPUs (Triton kernels); on TPU use 'shift'")
  return stride, dilation, method


def resolve_method(method: str) -> str:
  """The formulation "auto" runs: "shift" on every backend.

  Measured on CPU (benchmarks/op_bench.py) the shift form is 20-100x faster
  than patches forward and backward, and its memory does not grow with K*K.
  The Pallas kernels ("pallas") lower to Triton and match the reference (in
  Pallas' interpreter) but have not been timed on a GPU yet, so "auto" does
  not pick them until a GPU benchmark shows them faster.
  """
  return "shift" if method == "auto" else method


def involution(
  x: jax.Array, kernel: jax.Array, *, stride: int = 1, dilation: int = 1, method: str = "auto"
) -> jax.Array:
  """Involution of `x` with per-pixel, per-group kernels.

  Args:
    x: (B, H, W, C) input, floating point.
    kernel: (B, Ho, Wo, G, K, K) kernels, K odd, C divisible by G,
      Ho = ceil(H / stride), Wo = ceil(W / stride). Tap (u, v) of group g at
      output (i, j) weighs input pixel (i*stride + (u - K//2)*dilation,
      j*stride + (v - K//2)*dilation); channels [g*C/G, (g+1)*C/G) form group g.
    stride: output subsampling, int >= 1.
    dilation: spacing of the kernel taps, int >= 1.
    method: "patches" (conv_general_dilated_patches + einsum, the reference),
      "shift" (shift-and-accumulate in XLA, never builds the K*K-times patch
      tensor, forward or backward), "pallas" (Triton kernels for GPUs; a
      power-of-two number of channels per group), or "auto" (see
      `resolve_method`).

  Returns:
    (B, Ho, Wo, C) in x's dtype; products are accumulated in float32
    (float64 for float64 input).

  Raises:
    ValueError: on a wrong rank, even or non-square K, mismatched shapes, C not
      divisible by G, stride or dilation < 1, or an unknown method.
  """
  stride, dilation, method = validate(x, kernel, stride, dilation, method)
  method = resolve_method(method)
  if method == "patches":
    return involution_patches(x, kernel, stride, dilation)
  return involution_primitive(
    x, kernel, stride, dilation, impl="pallas" if method == "pallas" else "xla"
  )
