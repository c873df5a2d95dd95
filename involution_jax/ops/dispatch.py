"""The involution operator (Li et al., CVPR 2021) in 1, 2 or 3 dimensions: checks and dispatch.

Spatial-specific, channel-agnostic: the kernel at output position o is shared
by the channels of a group. For x (B, *S, C) and kernel (B, *O, G, *W),

    out[b, o, c] = sum_t kernel[b, o, g(c), t] * x[b, o*s + t*d - low, c]

per spatial dimension, with g(c) = c // (C // G) and zeros outside the input.
`padding` fixes `low`: "SAME" centres odd windows on o*s (low = d*(K-1)/2),
"CAUSAL" (1-D) ends them there (low = d*(K-1), the last tap reads position
o*s), or explicit (low, high) pairs.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from involution_jax.ops import pallas
from involution_jax.ops.patches import involution_patches, output_size, padded_output_size
from involution_jax.ops.primitive import involution_primitive, is_square_same_2d

METHODS = ("auto", "patches", "shift", "pallas")
PADDINGS = ("SAME", "CAUSAL")
_DIM_NAMES = {1: ("T",), 2: ("H", "W"), 3: ("D", "H", "W")}
Padding = str | Sequence[tuple[int, int]]


def _positive_int(name: str, value) -> int:
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(f"{name} must be an int >= 1, got {value!r}") from None
  if value < 1:
    raise ValueError(f"{name} must be an int >= 1, got {value}")
  return value


def _per_dim(name: str, value, n: int) -> tuple[int, ...]:
  """An int or n ints, each >= 1 -> n ints."""
  if isinstance(value, Sequence) and not isinstance(value, str):
    if len(value) != n:
      raise ValueError(
        f"{name} must be an int or {n} ints (one per spatial dimension), got {tuple(value)}"
      )
    return tuple(_positive_int(name, v) for v in value)
  return (_positive_int(name, value),) * n


def padding_pairs(
  padding: Padding, window: Sequence[int], dilation: Sequence[int]
) -> tuple[tuple[int, int], ...]:
  """ "SAME", "CAUSAL" or N (low, high) pairs -> N explicit (low, high) pairs."""
  n = len(window)
  if isinstance(padding, str):
    if padding not in PADDINGS:
      raise ValueError(
        f"unknown padding {padding!r}; expected 'SAME', 'CAUSAL' or {n} (low, high) pairs"
      )
    if padding == "CAUSAL":
      if n != 1:
        raise ValueError(f"padding 'CAUSAL' is for 1-D inputs, got {n} spatial dimensions")
      return (((window[0] - 1) * dilation[0], 0),)
    even = [k for k in window if k % 2 == 0]
    if even:
      raise ValueError(
        f"kernel size K must be odd, got K={even[0]} (window {tuple(window)}): "
        "padding 'SAME' centres odd windows; use 'CAUSAL' or explicit padding"
      )
    return tuple(((k - 1) // 2 * d,) * 2 for k, d in zip(window, dilation))
  try:
    pairs = tuple((operator.index(lo), operator.index(hi)) for lo, hi in padding)
  except (TypeError, ValueError):
    raise ValueError(
      f"padding must be 'SAME', 'CAUSAL' or {n} (low, high) pairs of ints, got {padding!r}"
    ) from None
  if len(pairs) != n or any(lo < 0 or hi < 0 for lo, hi in pairs):
    raise ValueError(f"padding must be {n} (low, high) pairs of ints >= 0, got {padding!r}")
  return pairs


def validate(
  x: jax.Array, kernel: jax.Array, stride, dilation, method: str, padding: Padding = "SAME"
):
  """Checks shapes, dtypes and options.

  Returns (stride, dilation, padding pairs, method), each per spatial dimension.
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
  if jnp.ndim(x) not in (3, 4, 5):
    raise ValueError(
      "x must have rank 3, 4 or 5 (B, *spatial, C) with 1-3 spatial "
      f"dimensions, e.g. (B, H, W, C), got shape {jnp.shape(x)}"
    )
  n = jnp.ndim(x) - 2
  names = _DIM_NAMES[n]
  if jnp.ndim(kernel) != 2 * n + 2:
    window = ", ".join(f"K{d}" for d in names) if n > 1 else "K"
    raise ValueError(
      f"kernel must have rank {2 * n + 2} (B, {', '.join(n + 'o' for n in names)}"
      f", G, {window}) for x of rank {n + 2}, got shape {jnp.shape(kernel)}"
    )
  stride = _per_dim("stride", stride, n)
  dilation = _per_dim("dilation", dilation, n)
  for name, a in (("x", x), ("kernel", kernel)):
    if not jnp.issubdtype(a.dtype, jnp.floating):
      raise ValueError(f"{name} must be floating point, got dtype {a.dtype}")
  b, spatial, c = x.shape[0], x.shape[1:-1], x.shape[-1]
  kb, out_shape, groups, window = (
    kernel.shape[0],
    kernel.shape[1 : n + 1],
    kernel.shape[n + 1],
    kernel.shape[n + 2 :],
  )
  pairs = padding_pairs(padding, window, dilation)
  if kb != b:
    raise ValueError(f"kernel batch {kb} != x batch {b} (x {x.shape}, kernel {kernel.shape})")
  if isinstance(padding, str):
    expected = tuple(output_size(size, st) for size, st in zip(spatial, stride))
    rule = f"({', '.join(f'ceil({d}/s)' for d in names)})"
  else:
    expected = tuple(
      padded_output_size(size, k, st, d, lo, hi)
      for size, k, st, d, (lo, hi) in zip(spatial, window, stride, dilation, pairs)
    )
    rule = "floor((size + low + high - d*(K-1) - 1) / s) + 1"
  if any(e < 1 for e, size in zip(expected, spatial) if size > 0):  # empty in, empty out
    raise ValueError(
      f"x {x.shape} is too small for window {tuple(window)} with dilation "
      f"{dilation} and padding {pairs}: output {expected}"
    )
  if tuple(out_shape) != expected:
    raise ValueError(
      f"kernel spatial shape {tuple(out_shape)} does not match x {x.shape} with "
      f"stride {stride[0] if len(set(stride)) == 1 else stride}: expected "
      f"{rule} = {expected}"
    )
  if groups < 1 or c % groups:
    raise ValueError(
      f"channels C={c} must be divisible by the kernel's group count G={groups} "
      f"(x {x.shape}, kernel {kernel.shape})"
    )
  if method == "pallas":
    if not is_square_same_2d(kernel.shape, stride, dilation, pairs):
      raise ValueError(
        "method 'pallas' supports 2-D inputs with a square window, padding "
        "'SAME' and equal strides and dilations; use method 'shift'"
      )
    problem = pallas.supported(x.shape, kernel.shape)
    if problem:
      raise ValueError(f"method 'pallas': {problem}; use method 'shift'")
  return stride, dilation, pairs, method


def resolve_method(method: str) -> str:
  """The formulation "auto" runs: "shift" on every backend.

  In 1-D on the CPU (float32/64, one device, not exported) "auto"'s shift
  primitive lowers to C++ loops (`native.py`): forward 1.9-2.5x and
  forward+backward 2-7.5x XLA's at T = 4096, C = 512, K = 7 and 31
  (benchmarks/op_bench.py), with no temporaries; "shift" always runs XLA's.

  Measured on CPU (benchmarks/op_bench.py) the shift form is 20-100x faster
  than patches forward and backward, and its memory does not grow with K*K.
  The Pallas kernels ("pallas") lower to Triton and match the reference (in
  Pallas' interpreter) but have not been timed on a GPU yet, so "auto" does
  not pick them until a GPU benchmark shows them faster.
  """
  return "shift" if method == "auto" else method


def involution(
  x: jax.Array,
  kernel: jax.Array,
  *,
  stride: int | Sequence[int] = 1,
  dilation: int | Sequence[int] = 1,
  padding: Padding = "SAME",
  method: str = "auto",
) -> jax.Array:
  """Involution of `x` with per-position, per-group kernels, in 1, 2 or 3 dimensions.

  Args:
    x: (B, *S, C) input (any array-like), floating point; N = len(S) spatial dimensions, 1-3
      ((B, T, C), (B, H, W, C), (B, D, H, W, C)).
    kernel: (B, *O, G, *W) kernels (any array-like): one window of N sizes W per output
      position and group, C divisible by G; channels [g*C/G, (g+1)*C/G) form
      group g. Tap t of group g at output o weighs input o*s + t*d - low.
    stride: output subsampling, an int or N ints >= 1.
    dilation: spacing of the taps, an int or N ints >= 1.
    padding: "SAME" (odd windows centred on o*s; O = ceil(S / s)), "CAUSAL"
      (1-D: the last tap reads o*s, the others earlier inputs; any K;
      O = ceil(T / s)), or N (low, high) pairs of zeros added before and after
      (O = floor((S + low + high - d*(K-1) - 1) / s) + 1).
    method: "patches" (conv_general_dilated_patches + einsum, the reference),
      "shift" (shift-and-accumulate in XLA, never builds the prod(W)-times
      patch tensor, forward or backward), "pallas" (Triton kernels for GPUs;
      2-D SAME square windows, a power-of-two number of channels per group),
      or "auto" (see `resolve_method`: "shift", and C++ loops in 1-D on CPU).

  Returns:
    (B, *O, C) in x's dtype; products are accumulated in float32 (float64 for
    float64 input).

  Raises:
    ValueError: on a wrong rank, an even window with SAME, CAUSAL in 2-D or
      3-D, mismatched shapes, C not divisible by G, a stride, dilation or
      padding of the wrong length or value, or an unknown method.
  """
  x, kernel = jnp.asarray(x), jnp.asarray(kernel)  # NumPy arrays, nested lists
  stride, dilation, pairs, requested = validate(x, kernel, stride, dilation, method, padding)
  method = resolve_method(requested)
  if x.size == 0 or kernel.size == 0:  # an empty batch, an empty axis: nothing to sum
    n = x.ndim - 2
    return jnp.zeros((x.shape[0], *kernel.shape[1 : n + 1], x.shape[-1]), x.dtype)
  if method == "patches":
    return involution_patches(x, kernel, stride, dilation, pairs)
  impl = "pallas" if method == "pallas" else ("auto" if requested == "auto" else "xla")
  return involution_primitive(x, kernel, stride, dilation, pairs, impl=impl)
