"""Memory-lean involution in XLA for any number of spatial dimensions and any padding.

The three partials of the trilinear form (see `primitive.py`) for x (B, *S, C),
kernel (B, *O, G, *W) and y / out (B, *O, C), with per-dimension stride s,
dilation d and explicit padding (low, high): output position o reads input
position o*s + t*d - low through tap t. Every pass is a sum over the taps of
strided slices (forward, kernel gradient) or interior-padded placements (input
gradient), which XLA fuses into one loop, so no (B, *O, C * prod(W)) patch
tensor is ever built. `xla.py` keeps its tuned loops for 2-D SAME square
windows; this module serves 1-D, 3-D, rectangular windows, causal and explicit
padding. In 1-D the rows whose taps all land inside x read x itself, and only
the few edge rows a padded copy (`_by_rows`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
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


def _by_rows(
  compute: Callable[[jax.Array, jax.Array, list[tuple[int, int]]], jax.Array],
  x: jax.Array,
  at_out: jax.Array,
  window0: int,
  stride: Sequence[int],
  dilation: Sequence[int],
  padding: Pairs,
) -> jax.Array:
  """`compute(x, at_out, padding)` on the head, interior and tail of the first output axis.

  x: (B, *S, ...), at_out: (B, *O, ...), the result (B, *O, ...). Interior
  rows read no padding along the first axis, so they run on slices of x
  itself: padding all of x first is an x-sized copy (a third of the 1-D
  causal forward). Only the few edge rows are computed from padded slices.
  """
  size, rows = x.shape[1], at_out.shape[1]
  s, reach, (low, _) = stride[0], dilation[0] * (window0 - 1), padding[0]
  first = min(rows, -(-low // s))  # the first row whose taps all land in x
  stop = max(first, min(rows, (size - 1 - reach + low) // s + 1))
  parts = []
  for start, end in ((0, first), (first, stop), (stop, rows)):
    if end == start:
      continue
    lo, hi = start * s - low, (end - 1) * s + reach - low + 1  # input rows read: [lo, hi)
    begin = min(max(lo, 0), size)
    xs = lax.slice_in_dim(x, begin, min(max(hi, begin), size), axis=1)
    zeros = hi - lo - xs.shape[1]  # rows read outside x, before it and after it
    before = min(max(begin - lo, 0), zeros)
    edge = [(before, zeros - before), *padding[1:]]
    parts.append(compute(xs, lax.slice_in_dim(at_out, start, end, axis=1), edge))
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


def _aggregate_padded(
  x: jax.Array, kernel: jax.Array, padding: Pairs, *, stride, dilation, acc
) -> jax.Array:
  """The involution of x zero-padded by `padding`, summed in `acc`: (B, *O, C)."""
  n = len(stride)
  out_shape, groups, window = kernel.shape[1 : n + 1], kernel.shape[n + 1], kernel.shape[n + 2 :]
  xp = _padded(grouped(x, groups), padding)
  out = None
  for tap in _taps(window):
    term = _window(xp, tap, out_shape, stride, dilation).astype(acc) * kernel[
      (..., *tap, None)
    ].astype(acc)
    out = term if out is None else out + term
  return out.reshape(out.shape[: n + 1] + (-1,))


def aggregate(
  x: jax.Array,
  kernel: jax.Array,
  stride: Sequence[int],
  dilation: Sequence[int],
  padding: Pairs,
  out_dtype,
) -> jax.Array:
  """dT/dy, the involution itself: (B, *O, C)."""
  compute = partial(
    _aggregate_padded, stride=stride, dilation=dilation, acc=accumulation_dtype(out_dtype)
  )
  if len(stride) == 1:
    out = _by_rows(compute, x, kernel, kernel.shape[-1], stride, dilation, padding)
  else:  # the other axes are padded anyway: splitting the first gains nothing in 3-D
    out = compute(x, kernel, padding)
  return computed_once(out).astype(out_dtype)


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


def _grad_kernel_padded(
  x: jax.Array, y: jax.Array, padding: Pairs, *, window, stride, dilation, acc
) -> jax.Array:
  """dT/dkernel for x zero-padded by `padding`, y (B, *O, G, Cg): (B, *O, G, *W)."""
  n = len(window)
  xp = _padded(grouped(x, y.shape[-2]), padding)
  axis0 = y.ndim - 1  # the first window axis of the result

  # Taps concatenated along the last window axis, then those rows along the
  # axis before, and so on: XLA's CPU backend fuses concatenations of <= 8
  # arrays, so the whole gradient is one loop (a flat concatenation in rounds
  # made one loop per round: 2x slower in 2-D).
  def build(prefix: tuple[int, ...]) -> jax.Array:
    dim = len(prefix)
    if dim == n:
      window_of = partial(_window, xp, prefix, y.shape[1:-2], stride, dilation)
      tap = channel_sum(window_of, y, acc)  # (B, *O, G, 1)
      return tap.reshape(tap.shape + (1,) * (n - 1))
    parts = [build(prefix + (i,)) for i in range(window[dim])]
    while len(parts) > 1:  # windows wider than 8: in rounds
      parts = [jnp.concatenate(parts[i : i + 8], axis=axis0 + dim) for i in range(0, len(parts), 8)]
    return parts[0]

  return build(())


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
  acc = accumulation_dtype(kernel_dtype)
  compute = partial(_grad_kernel_padded, window=window, stride=stride, dilation=dilation, acc=acc)
  yg = grouped(y, groups)
  if len(window) == 1 and window[0] <= 8:
    out = _by_rows(compute, x, yg, window[0], stride, dilation, padding)
  else:
    # Past 8 taps (or axes) the gradient is a concatenation of concatenations,
    # which XLA does not fuse with the rows': the interior is copied once more
    # (1-D K = 31: 1.2x slower, twice the temporaries). In 3-D nothing is gained.
    out = compute(x, yg, padding)
  return out.astype(kernel_dtype)
