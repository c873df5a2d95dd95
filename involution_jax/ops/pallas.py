"""Involution as Pallas (Triton) kernels for GPUs: forward, input and kernel gradients.

One program per (image, output row, group): it keeps a (width, channels of the
group) tile in registers and accumulates the K*K taps, reading each input row
once per tap from global memory / L2 (no patch tensor anywhere). The input is
zero-padded by XLA first, and every array is padded to a power-of-two tile
width, so all loads are in bounds and unmasked. The input gradient is the same
loop over a padded cotangent (stride 1); strided input gradients use the XLA
formulation (`xla.aggregate_grad_x`).

These are the implementations behind `involution(..., method="pallas")` (the
primitive in `primitive.py` routes its three partials here). On CPU they run
in Pallas' interpreter, which is how the tests check them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from involution_jax.ops import xla


def _pow2(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


def supported(x_shape, kernel_shape) -> str | None:
  """None when the kernels handle these shapes, else why not."""
  groups = kernel_shape[3]
  group_channels = x_shape[3] // groups
  if group_channels != _pow2(group_channels):
    return f"channels per group must be a power of two for the Pallas kernels, got {group_channels}"
  return None


def _padded_input(x, out_rows: int, tile: int, kernel_size: int, stride: int, dilation: int):
  """x zero-padded for the taps, and far enough right for `tile`-wide strided reads."""
  _, h, w, _ = x.shape
  pad = dilation * (kernel_size // 2)
  width = (tile - 1) * stride + (kernel_size - 1) * dilation + 1
  rows = (out_rows - 1) * stride + (kernel_size - 1) * dilation + 1
  return jnp.pad(
    x, ((0, 0), (pad, max(rows - h - pad, pad)), (pad, max(width - w - pad, 0)), (0, 0))
  )


def _call(kernel, out_shape, grid, interpret: bool):
  return pl.pallas_call(
    kernel,
    out_shape=out_shape,
    grid=grid,
    interpret=interpret,
    compiler_params=plt.CompilerParams(num_warps=4, num_stages=1),
  )


def aggregate(x, kernel, stride: int, dilation: int, out_dtype, interpret: bool):
  """Forward: (B, H, W, C) x (B, Ho, Wo, G, K, K) -> (B, Ho, Wo, C)."""
  b, h, w, c = x.shape
  _, ho, wo, g, k, _ = kernel.shape
  cg, tile = c // g, _pow2(wo)
  xp = _padded_input(x, ho, tile, k, stride, dilation)
  kp = jnp.pad(kernel, ((0, 0), (0, 0), (0, tile - wo), (0, 0), (0, 0), (0, 0)))
  acc_dtype = xla.accumulation_dtype(out_dtype)

  def body(x_ref, k_ref, o_ref):
    bi, i, gi = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    acc = jnp.zeros((tile, cg), acc_dtype)
    for u in range(k):
      for v in range(k):
        xs = x_ref[
          bi, i * stride + u * dilation, pl.ds(v * dilation, tile, stride), pl.ds(gi * cg, cg)
        ]
        kv = k_ref[bi, i, :, gi, u, v]
        acc += xs.astype(acc_dtype) * kv.astype(acc_dtype)[:, None]
    o_ref[bi, i, :, pl.ds(gi * cg, cg)] = acc.astype(o_ref.dtype)

  out = _call(body, jax.ShapeDtypeStruct((b, ho, tile, c), out_dtype), (b, ho, g), interpret)(
    xp, kp
  )
  return out[:, :, :wo]


def aggregate_grad_kernel(
  x, y, kernel_size: int, groups: int, stride: int, dilation: int, kernel_dtype, interpret: bool
):
  """d kernel: per tap, the sum over a group's channels of y times the tap's input."""
  b, h, w, c = x.shape
  _, ho, wo, _ = y.shape
  k, g, cg, tile = kernel_size, groups, c // groups, _pow2(wo)
  xp = _padded_input(x, ho, tile, k, stride, dilation)
  yp = jnp.pad(y, ((0, 0), (0, 0), (0, tile - wo), (0, 0)))
  acc_dtype = xla.accumulation_dtype(kernel_dtype)

  def body(x_ref, y_ref, o_ref):
    bi, i, gi = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    ys = y_ref[bi, i, :, pl.ds(gi * cg, cg)].astype(acc_dtype)
    for u in range(k):
      for v in range(k):
        xs = x_ref[
          bi, i * stride + u * dilation, pl.ds(v * dilation, tile, stride), pl.ds(gi * cg, cg)
        ]
        o_ref[bi, i, :, gi, u, v] = jnp.sum(xs.astype(acc_dtype) * ys, axis=1).astype(o_ref.dtype)

  out = _call(
    body, jax.ShapeDtypeStruct((b, ho, tile, g, k, k), kernel_dtype), (b, ho, g), interpret
  )(xp, yp)
  return out[:, :, :wo]


def aggregate_grad_x(kernel, y, x_hw, stride: int, dilation: int, x_dtype, interpret: bool):
  """d x for stride 1: every input pixel gathers the cotangents of the outputs that read it."""
  if stride != 1:
    return xla.aggregate_grad_x(kernel, y, x_hw, stride, dilation, x_dtype)
  h, w = x_hw
  b, _, _, c = y.shape
  _, ho, wo, g, k, _ = kernel.shape
  cg, tile = c // g, _pow2(w)
  pad = dilation * (k // 2)
  extra = tile - w
  yp = jnp.pad(y, ((0, 0), (pad, pad), (pad, pad + extra), (0, 0)))
  kp = jnp.pad(kernel, ((0, 0), (pad, pad), (pad, pad + extra), (0, 0), (0, 0), (0, 0)))
  acc_dtype = xla.accumulation_dtype(x_dtype)

  def body(y_ref, k_ref, o_ref):
    bi, r, gi = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    acc = jnp.zeros((tile, cg), acc_dtype)
    for u in range(k):
      for v in range(k):
        row, col = r + (k - 1 - u) * dilation, (k - 1 - v) * dilation
        ys = y_ref[bi, row, pl.ds(col, tile), pl.ds(gi * cg, cg)]
        kv = k_ref[bi, row, pl.ds(col, tile), gi, u, v]
        acc += ys.astype(acc_dtype) * kv.astype(acc_dtype)[:, None]
    o_ref[bi, r, :, pl.ds(gi * cg, cg)] = acc.astype(o_ref.dtype)

  out = _call(body, jax.ShapeDtypeStruct((b, h, tile, c), x_dtype), (b, h, g), interpret)(yp, kp)
  return out[:, :, :w]
