"""Multi-level RoIAlign, jit-friendly: boxes padded to a fixed count, every level at once.

`roi_align` follows torchvision's `roi_align(aligned=True)` (the half-pixel
offset; a box covers [x1 / s - 0.5, x2 / s - 0.5] on a level of stride s) with a
fixed `sampling_ratio` (samples per bin and axis). The official detectors ask for
the adaptive ratio (ceil of the bin size), whose sample count depends on each
box's size: shapes that jit cannot hold fixed, so a fixed 2 is the default here.
Each box reads the level mmdet's `SingleRoIExtractor` picks (`roi_levels`).
Boxes carry no gradient (proposals are detached in mmdet too); features do.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

FINEST_SCALE = 56


def roi_levels(boxes: jax.Array, num_levels: int, finest_scale: int = FINEST_SCALE) -> jax.Array:
  """mmdet's level of each box: floor(log2(sqrt(w h) / finest_scale + 1e-6)) in [0, L).

  boxes: (..., 4) as (x1, y1, x2, y2) in input pixels -> (...) int32.
  """
  scale = jnp.sqrt(
    jnp.maximum((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]), 0)
  )
  level = jnp.floor(jnp.log2(scale / finest_scale + 1e-6))
  return jnp.clip(level, 0, num_levels - 1).astype(jnp.int32)


def _axis_samples(start, size, length, bins: int, ratio: int):
  """Bilinear taps along one axis for every (box, bin, sample).

  start, size, length: (B, R) box start and extent on its level, and the level's
  size. Returns ((low, high) indices, (low, high) weights), each (B, R, bins, ratio);
  samples outside [-1, length] weigh 0, as in torchvision.
  """
  bin_size = size / bins
  offsets = jnp.arange(bins)[:, None] + (jnp.arange(ratio)[None, :] + 0.5) / ratio
  pos = start[..., None, None] + offsets * bin_size[..., None, None]  # (B, R, bins, ratio)
  last = (length - 1)[..., None, None]
  inside = (pos >= -1.0) & (pos <= length[..., None, None])
  pos = jnp.clip(pos, 0, None)
  low = jnp.minimum(jnp.floor(pos), last)
  pos = jnp.where(low >= last, last, pos)
  high = jnp.minimum(low + 1, last)
  frac = pos - low
  weights = (jnp.where(inside, 1 - frac, 0), jnp.where(inside, frac, 0))
  return (low.astype(jnp.int32), high.astype(jnp.int32)), weights


def roi_align(
  features: Sequence[jax.Array],
  boxes: jax.Array,
  strides: Sequence[int],
  output_size: int = 7,
  sampling_ratio: int = 2,
  levels: jax.Array | None = None,
) -> jax.Array:
  """Pooled features of each box from its level of the pyramid.

  features: L maps (B, H_l, W_l, C), finest first, of strides `strides`.
  boxes: (B, R, 4) (x1, y1, x2, y2) in input pixels (padding boxes are fine:
  mask them afterwards). levels: (B, R) level per box (default `roi_levels`).
  Returns (B, R, P, P, C), P = `output_size`.

  The levels are read as one flat (B sum H_l W_l, C) table, and the bilinear
  taps added one at a time: the memory beyond the output is that table and about
  two output-sized buffers, forward and backward, whatever the number of levels.
  """
  if len(features) != len(strides):
    raise ValueError(f"{len(features)} feature levels but {len(strides)} strides")
  if sampling_ratio < 1:
    raise ValueError(
      f"sampling_ratio={sampling_ratio}: a fixed number of samples >= 1 is needed "
      "(the adaptive ratio 0 gives shapes that depend on the boxes)"
    )
  batch, rois = boxes.shape[:2]
  channels = features[0].shape[-1]
  boxes = jax.lax.stop_gradient(boxes.astype(jnp.float32))
  if levels is None:
    levels = roi_levels(boxes, len(features))
  sizes = np.array([f.shape[1:3] for f in features])
  offsets = np.concatenate([[0], np.cumsum(sizes[:, 0] * sizes[:, 1])[:-1]])
  table = jnp.concatenate([f.reshape(batch, -1, channels) for f in features], axis=1)
  # Whole rows of one (B * N, C) table: the gather's transpose, a scatter-add, then needs
  # no per-channel indices.
  base_rows = jnp.arange(batch, dtype=jnp.int32)[:, None, None, None] * table.shape[1]
  table = table.reshape(-1, channels)
  scale = jnp.asarray(1.0 / np.asarray(strides, np.float32))[levels]
  height = jnp.asarray(sizes[:, 0], jnp.float32)[levels]
  width = jnp.asarray(sizes[:, 1], jnp.float32)[levels]
  row_width = jnp.asarray(sizes[:, 1], jnp.int32)[levels][..., None, None]
  base = jnp.asarray(offsets, jnp.int32)[levels][..., None, None] + base_rows
  x1, y1, x2, y2 = (boxes[..., i] * scale for i in range(4))
  ys, wys = _axis_samples(y1 - 0.5, y2 - y1, height, output_size, sampling_ratio)
  xs, wxs = _axis_samples(x1 - 0.5, x2 - x1, width, output_size, sampling_ratio)
  taps = [
    (
      (base + y[..., :, None, sy] * row_width + x[..., None, :, sx]).reshape(-1),  # (B R P P,)
      (wy[..., :, None, sy] * wx[..., None, :, sx]).reshape(-1),
    )
    for sy in range(sampling_ratio)
    for sx in range(sampling_ratio)
    for y, wy in zip(ys, wys)
    for x, wx in zip(xs, wxs)
  ]
  index, weight = (jnp.stack(parts) for parts in zip(*taps))

  # One tap at a time, in a loop: the backward pass then scatter-adds one output-sized
  # slice into the table's gradient per step instead of holding all of them at once.
  def add_tap(out, tap):
    rows, w = tap
    return out + w[:, None].astype(out.dtype) * table[rows].astype(out.dtype), None

  out = jnp.zeros((index.shape[1], channels), jnp.promote_types(table.dtype, jnp.float32))
  out, _ = jax.lax.scan(add_tap, out, (index, weight))
  out = out / sampling_ratio**2
  return out.reshape(batch, rois, output_size, output_size, channels).astype(features[0].dtype)
