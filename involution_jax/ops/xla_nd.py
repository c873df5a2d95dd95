"""Memory-lean involution in XLA for any number of spatial dimensions and any padding.

The three partials of the trilinear form (see `primitive.py`) for x (B, *S, C),
kernel (B, *O, G, *W) and y / out (B, *O, C), with per-dimension stride s,
dilation d and explicit padding (low, high): output position o reads input
position o*s + t*d - low through tap t. Every pass is a sum over the taps of
strided slices (forward, kernel gradient) or interior-padded placements (input
gradient), which XLA fuses into one loop, so no (B, *O, C * prod(W)) patch
tensor is ever built. `xla.py` keeps its tuned loops for 2-D SAME square
windows; this module serves 1-D, 3-D, rectangular windows, causal and explicit
padding.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from involution_jax.ops.fusion import computed_once
from involution_jax.ops.xla import accumulation_dtype, channel_sum, grouped

Pairs = Sequence[tuple[int, int]]


def _padded(x: jax.Array, padding: Pairs) -> jax.Array:
  """(B, *S, G, Cg) padded with zeros on the spatial axes (group and channel axes as one)."""
  flat = x.reshape(x.shape[: 1 + len(padding)] + (-1,))
  out = lax.pad(
    flat, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)]
  )
  return out.reshape(out.shape[:-1] + x.shape[-2:])


def _window(
  xp: jax.Array,
  tap: Sequence[int],
  out_shape: Sequence[int],
  stride: Sequence[int],
  dilation: Sequence[int],
  channels: tuple[int, int] | None = None,
) -> jax.Array:
  """The strided window of padded `xp` (B, *Sp, G, Cg) that tap `tap` reads: (B, *O, G, Cg')."""
  n = len(tap)
  start = [0] + [t * d for t, d in zip(tap, dilation)] + [0, 0]
  limit = (
    [xp.shape[0]]
    + [t * d + (o - 1) * s + 1 for t, d, o, s in zip(tap, dilation, out_shape, stride)]
    + list(xp.shape[n + 1 :])
  )
  if channels is not None:
    start[-1], limit[-1] = channels
  return lax.slice(xp, start, limit, (1, *stride, 1, 1))


def _taps(window: Sequence[int]):
  return itertools.product(*(range(k) for k in window))


def aggregate(
  x: jax.Array,
  kernel: jax.Array,
  stride: Sequence[int],
  dilation: Sequence[int],
  padding: Pairs,
  out_dtype,
) -> jax.Array:
  """dT/dy, the involution itself: (B, *O, C)."""
  n = len(stride)
  out_shape, groups, window = kernel.shape[1 : n + 1], kernel.shape[n + 1], kernel.shape[n + 2 :]
  acc = accumulation_dtype(out_dtype)
  xp = _padded(grouped(x, groups), padding)
  out = None
  for tap in _taps(window):
    term = _window(xp, tap, out_shape, stride, dilation).astype(acc) * kernel[
      (..., *tap, None)
    ].astype(acc)
    out = term if out is None else out + term
  return computed_once(out.reshape(out.shape[: n + 1] + (-1,))).astype(out_dtype)


def aggregate_grad_x(
  kernel: jax.Array,
  y: jax.Array,
  x_spatial: Sequence[int],
  stride: Sequence[int],
  dilation: Sequence[int],
  padding: Pairs,
  x_dtype,
) -> jax.Array:
  """dT/dx: (B, *S, C).

  Each tap's product y * kernel[tap] lands on the input positions the tap read,
  o*s + t*d - low: one interior-padded (stride) and shifted placement per tap,
  cropped to the input, all summed in one fused loop.
  """
  n = len(stride)
  out_shape, groups, window = kernel.shape[1 : n + 1], kernel.shape[n + 1], kernel.shape[n + 2 :]
  acc = accumulation_dtype(x_dtype)
  yg = grouped(y, groups).astype(acc)
  zero = jnp.zeros((), acc)
  out = None
  for tap in _taps(window):
    config = [(0, 0, 0)]
    for t, d, (low, _), o, s, size in zip(tap, dilation, padding, out_shape, stride, x_spatial):
      first = t * d - low
      config.append((first, size - (first + (o - 1) * s + 1), s - 1))
    term = lax.pad(yg * kernel[(..., *tap, None)].astype(acc), zero, config + [(0, 0, 0)] * 2)
    out = term if out is None else out + term
  return computed_once(out.reshape(out.shape[: n + 1] + (-1,))).astype(x_dtype)


def aggregate_grad_kernel(
  x: jax.Array,
  y: jax.Array,
  window: Sequence[int],
  groups: int,
  stride: Sequence[int],
  dilation: Sequence[int],
  padding: Pairs,
  kernel_dtype,
) -> jax.Array:
  """dT/dkernel: (B, *O, G, *W); per tap, a sum over a group's channels."""
  n = len(window)
  acc = accumulation_dtype(kernel_dtype)
  xp = _padded(grouped(x, groups), padding)
  yg = grouped(y, groups)
  axis0 = yg.ndim - 1  # the first window axis of the result

  # Taps concatenated along the last window axis, then those rows along the
  # axis before, and so on: XLA's CPU backend fuses concatenations of <= 8
  # arrays, so the whole gradient is one loop (a flat concatenation in rounds
  # made one loop per round: 2x slower in 2-D).
  def build(prefix: tuple[int, ...]) -> jax.Array:
    dim = len(prefix)
    if dim == n:
      window_of = partial(_window, xp, prefix, yg.shape[1:-2], stride, dilation)
      tap = channel_sum(window_of, yg, acc)  # (B, *O, G, 1)
      return tap.reshape(tap.shape + (1,) * (n - 1))
    parts = [build(prefix + (i,)) for i in range(window[dim])]
    while len(parts) > 1:  # windows wider than 8: in rounds
      parts = [jnp.concatenate(parts[i : i + 8], axis=axis0 + dim) for i in range(0, len(parts), 8)]
    return parts[0]

  return build(()).astype(kernel_dtype)
