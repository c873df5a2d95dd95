"""Memory-lean involution in XLA: shift-and-accumulate, forward and both gradients.

The three partial derivatives of involution's trilinear form (see
`primitive.py`): the output `aggregate`, the input gradient
`aggregate_grad_x` and the kernel gradient `aggregate_grad_kernel`. Each is a
sum over the K*K taps of strided slices of padded arrays, which XLA fuses into
one loop, so no (B, Ho, Wo, C*K*K) patch tensor is ever built, in any pass.

Shapes: x (B, H, W, C), kernel (B, Ho, Wo, G, K, K), y / out (B, Ho, Wo, C).
Inputs are validated by :func:`involution_jax.ops.involution`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from involution_jax.ops.fusion import computed_once


def accumulation_dtype(dtype) -> np.dtype:
  """float32 for float32 and narrower floats, float64 for float64."""
  return np.dtype(jnp.promote_types(dtype, jnp.float32))


def tap_window(
  xp: jax.Array,
  u: int,
  v: int,
  out_hw: tuple[int, int],
  stride: int,
  dilation: int,
  channels: tuple[int, int] | None = None,
) -> jax.Array:
  """The strided window of padded `xp` (B, Hp, Wp, ..., C') that tap (u, v) reads.

  `channels` = (start, stop) also restricts the last axis, in the same slice
  (a slice of a strided slice is not always merged by XLA, which then copies).
  """
  ho, wo = out_hw
  start = [0, u * dilation, v * dilation] + [0] * (xp.ndim - 3)
  limit = [
    xp.shape[0],
    u * dilation + (ho - 1) * stride + 1,
    v * dilation + (wo - 1) * stride + 1,
  ] + list(xp.shape[3:])
  if channels is not None:
    start[-1], limit[-1] = channels
  return lax.slice(xp, start, limit, (1, stride, stride) + (1,) * (xp.ndim - 3))


def pad_hw(a: jax.Array, low: int, high: int | None = None, value: float = 0.0) -> jax.Array:
  """(B, H, W, ...) -> (B, low + H + high, low + W + high, ...) filled with `value`.

  `high` defaults to `low`. The trailing axes are padded as one: XLA's CPU
  loops vectorise the minor axis, and a (..., G, 7, 7) kernel padded as such
  copied ~5x slower than as (..., G * 49).
  """
  high = low if high is None else high
  flat = a.reshape(a.shape[:3] + (-1,))
  out = jnp.pad(flat, ((0, 0), (low, high), (low, high), (0, 0)), constant_values=value)
  return out.reshape(out.shape[:3] + a.shape[3:])


def grouped(a: jax.Array, groups: int) -> jax.Array:
  """(B, *S, C) -> (B, *S, G, C // G): a group's channels are contiguous."""
  return a.reshape(a.shape[:-1] + (groups, a.shape[-1] // groups))


def aggregate(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, out_dtype) -> jax.Array:
  """dT/dy, the involution itself: (B, Ho, Wo, C)."""
  _, ho, wo, g, k, _ = kernel.shape
  acc = accumulation_dtype(out_dtype)
  xp = pad_hw(grouped(x, g), dilation * (k // 2))
  out = None
  for u in range(k):
    for v in range(k):
      term = tap_window(xp, u, v, (ho, wo), stride, dilation).astype(acc) * kernel[
        ..., u, v, None
      ].astype(acc)
      out = term if out is None else out + term
  return computed_once(out.reshape(out.shape[:3] + (-1,))).astype(out_dtype)


def _shifted_hw(a: jax.Array, du: int, dv: int) -> jax.Array:
  """a (B, H, W, ...) moved by (du, dv): out[:, i, j] = a[:, i - du, j - dv], 0 outside."""
  spatial = [(0, 0, 0), (du, -du, 0), (dv, -dv, 0)] + [(0, 0, 0)] * (a.ndim - 3)
  return lax.pad(a, jnp.zeros((), a.dtype), spatial)


def _phase_taps(kernel_size: int, stride: int, dilation: int, phase: int) -> list[tuple[int, int]]:
  """Taps u that reach input rows r = m*stride + phase, with their shift.

  Output row i reads input row i*s + (u - K//2)*d; that row is m*s + phase
  exactly when delta = ((u - K//2)*d - phase) / s is an integer, and then
  i = m - delta. Returns [(u, delta), ...].
  """
  c = kernel_size // 2
  return [
    (u, ((u - c) * dilation - phase) // stride)
    for u in range(kernel_size)
    if ((u - c) * dilation - phase) % stride == 0
  ]


def _transposed_kernel(kernel: jax.Array, dilation: int) -> jax.Array:
  """kernel_t[p, u, v] = kernel[p + o(u, v), K-1-u, K-1-v], zero outside the map.

  o(u, v) = ((u - K//2)*d, (v - K//2)*d) is the offset tap (u, v) reads at
  stride 1. Tap (K-1-u, K-1-v) of the pixel there read p, so at stride 1 the
  input gradient is the involution of y with this kernel. Built as the
  kernel gradient is: rows of taps concatenated, then the rows.
  """
  k = kernel.shape[-1]
  c = k // 2
  rows = [
    jnp.concatenate(
      [
        _shifted_hw(kernel[..., k - 1 - u, k - 1 - v], (c - u) * dilation, (c - v) * dilation)[
          ..., None
        ]
        for v in range(k)
      ],
      axis=-1,
    )
    for u in range(k)
  ]
  return jnp.stack(rows, axis=-2)


def aggregate_grad_x(
  kernel: jax.Array, y: jax.Array, x_hw: tuple[int, int], stride: int, dilation: int, x_dtype
) -> jax.Array:
  """dT/dx: (B, H, W, C).

  Each output pixel sends its cotangent, weighted by the kernel tap, back to
  the input pixel the tap read. At stride 1 that is `aggregate` of y with the
  transposed kernel (one kernel-sized copy, read without bounds checks like
  the forward's), except where the forward's halo more than triples y (7 x 7
  maps at K = 7): there, as at every stride > 1, the padded y and the kernel
  copy would exceed ~15% of the unfold tensor.

  Otherwise, split by input phase (row mod s, col mod s), every phase is a
  stride-1 sum over its taps of shifted products of y and the kernel, shifted
  in place (bounds checks in the loop, no copy): one fused loop per phase, no
  zeros multiplied; the s*s phases are interleaved at the end (one x-sized
  copy).
  """
  h, w = x_hw
  _, ho, wo, g, k, _ = kernel.shape
  halo = 2 * dilation * (k // 2)
  if stride == 1 and (h + halo) * (w + halo) <= 3 * h * w:
    return aggregate(y, _transposed_kernel(kernel, dilation), 1, dilation, x_dtype)
  acc = accumulation_dtype(x_dtype)
  phases = [_phase_taps(k, stride, dilation, p) for p in range(stride)]
  yg = grouped(y, g)
  rows = []
  for row_taps in phases:
    cols = []
    for col_taps in phases:
      out = jnp.zeros(yg.shape, acc)
      for u, du in row_taps:
        for v, dv in col_taps:
          out = out + _shifted_hw(yg.astype(acc) * kernel[..., u, v, None].astype(acc), du, dv)
      cols.append(out)
    rows.append(jnp.stack(cols, axis=3))
  # (B, Ho, s, Wo, s, G, Cg): row m*s + p of x is phase p's row m.
  out = jnp.stack(rows, axis=2)
  out = out.reshape((out.shape[0], ho * stride, wo * stride, -1))[:, :h, :w]
  return computed_once(out).astype(x_dtype)


def _channel_chunk(group_channels: int) -> int:
  """Chunk width for `channel_sum`: the largest divisor d <= 16 of the
  group width with d * d <= group width (so chunks and lanes balance)."""
  return max(d for d in range(1, 17) if group_channels % d == 0 and d * d <= group_channels)


def channel_sum(window: Callable[[tuple[int, int]], jax.Array], y: jax.Array, acc) -> jax.Array:
  """sum_c window[..., g, c] * y[..., g, c]: (B, *O, G, 1), for one tap.

  `window(channels)` is the tap's strided window of the padded input, (B, *O,
  G, Cg) restricted to `channels` = (start, stop); y: (B, *O, G, Cg). Slices
  and adds only, no `reduce`: XLA's CPU backend does not fuse a slice into a
  reduction and would copy every tap's window (K*K copies of x). Chunks of
  channels are added elementwise first, then the lanes of the chunk.
  """
  cg = y.shape[-1]
  chunk = _channel_chunk(cg)
  lanes = None
  for start in range(0, cg, chunk):
    term = window((start, start + chunk)).astype(acc) * lax.slice_in_dim(
      y, start, start + chunk, axis=-1
    ).astype(acc)
    lanes = term if lanes is None else lanes + term
  out = None
  for lane in range(chunk):
    term = lax.slice_in_dim(lanes, lane, lane + 1, axis=-1)
    out = term if out is None else out + term
  return out


def aggregate_grad_kernel(
  x: jax.Array,
  y: jax.Array,
  kernel_size: int,
  groups: int,
  stride: int,
  dilation: int,
  kernel_dtype,
) -> jax.Array:
  """dT/dkernel: (B, Ho, Wo, G, K, K); per tap, a sum over a group's channels."""
  k = kernel_size
  acc = accumulation_dtype(kernel_dtype)
  xp = pad_hw(grouped(x, groups), dilation * (k // 2))
  yg = grouped(y, groups)
  # One row of taps per concatenation, then the rows on the non-minor axis:
  # XLA's CPU backend fuses concatenations of <= 8 arrays, so the whole
  # gradient is one loop instead of K*K passes over x and y.
  rows = [
    jnp.concatenate(
      [
        channel_sum(partial(tap_window, xp, u, v, yg.shape[1:3], stride, dilation), yg, acc)[
          ..., None
        ]
        for v in range(k)
      ],
      axis=-1,
    )
    for u in range(k)
  ]
  return jnp.concatenate(rows, axis=-2).astype(kernel_dtype)
