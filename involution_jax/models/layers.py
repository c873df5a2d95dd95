"""Flax linen layers, PyTorch-exact: BatchNorm, convolutions, pooling.

The pieces the involution layer (`involution.py`) and RedNet are built from.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from involution_jax.ops import output_size
from involution_jax.ops.conv import conv_nhwc
from involution_jax.ops.xla import pad_hw, tap_window

Dtype = Any

# PyTorch's kaiming_normal_(mode="fan_out", nonlinearity="relu"): untruncated.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BatchNorm(nn.Module):
  """Batch normalisation over all axes but the last, as PyTorch computes it.

  Train mode normalises with the batch's biased variance and updates the
  running variance with the unbiased one (n / (n - 1)), like `torch.nn.BatchNorm2d`
  (Flax's BatchNorm keeps the biased one). Under `jax.jit` with the batch
  sharded over devices the statistics are those of the global batch (SyncBN),
  and the backward pass is `batch_norm_train`'s closed form (reverse mode;
  forward-mode differentiation of train mode is not defined). `momentum` is
  Flax's: running = momentum * running + (1 - momentum) * batch, so PyTorch's
  default 0.1 is 0.9 here.
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  scale_init: nn.initializers.Initializer = nn.initializers.ones
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
    stats_dtype = jnp.promote_types(self.param_dtype, jnp.float32)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), stats_dtype)
    running_var = self.variable("batch_stats", "var", jnp.ones, (features,), stats_dtype)
    compute = jnp.promote_types(x.dtype, stats_dtype)
    xf, scale, bias = (a.astype(compute) for a in (x, scale, bias))
    if not train:
      y = _normalize(
        xf, scale, bias, running_mean.value, jax.lax.rsqrt(running_var.value + self.epsilon)
      )
      return y.astype(self.dtype or x.dtype)
    y, mean, var = batch_norm_train(xf, scale, bias, self.epsilon)
    if not self.is_initializing():
      n = x.size // features
      m = self.momentum
      running_mean.value = m * running_mean.value + (1 - m) * mean
      running_var.value = m * running_var.value + (1 - m) * var * (n / max(n - 1, 1))
    return y.astype(self.dtype or x.dtype)


def _normalize(x, scale, bias, mean, inv_std):
  mul = scale * inv_std
  return x * mul + (bias - mean * mul)


def _batch_norm_forward(x, scale, bias, epsilon):
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.mean(jnp.square(x - mean), axes)
  inv_std = jax.lax.rsqrt(var + epsilon)
  return _normalize(x, scale, bias, mean, inv_std), mean, var, inv_std


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(
  x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Batch normalisation with the batch's statistics; x: (..., C), scale, bias: (C,).

  Returns y (x's shape), the batch mean and the biased variance (C,); the two
  statistics are outputs only (not differentiated). Its backward pass is the
  closed form, two reductions and one elementwise pass,
  dx = scale / std * (g - mean(g) - x_hat * mean(g * x_hat)),
  where autodiff of the forward would store x - mean and reduce once more.
  """
  y, mean, var, _ = _batch_norm_forward(x, scale, bias, epsilon)
  return y, mean, var


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  y, mean, var, inv_std = _batch_norm_forward(x, scale, bias, epsilon)
  return (y, mean, var), (x, scale, mean, inv_std)


def _batch_norm_train_bwd(_epsilon, residuals, cotangents):
  x, scale, mean, inv = residuals
  g = cotangents[0]
  axes = tuple(range(x.ndim - 1))
  # Only reductions of g and g * x, and x_hat inside the elementwise pass:
  # XLA would otherwise store x_hat (or x - mean) from the forward pass.
  d_bias = jnp.sum(g, axes)
  d_scale = inv * (jnp.sum(g * x, axes) - mean * d_bias)
  n = x.size // x.shape[-1]
  x_hat = x * inv - mean * inv
  d_x = (scale * inv) * (g - d_bias / n - x_hat * (d_scale / n))
  return d_x, d_scale, d_bias


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class ConvModule(nn.Module):
  """Conv (no bias when normalised) -> optional norm -> optional ReLU.

  Children `conv` and `bn` (or `ln`), as mmcv's ConvModule. A 1x1 convolution
  is a `Dense` on the channel axis (a matmul, XLA's fast path; any rank), after
  subsampling for a stride; wider kernels are `nn.Conv` with PyTorch's
  symmetric padding. `norm`: True or "batch" (BatchNorm), "layer" (LayerNorm
  over the channels of each position), False or None.
  """

  features: int
  kernel_size: int = 1
  stride: int = 1
  norm: bool | str | None = True
  act: bool = True
  kernel_init: nn.initializers.Initializer = kaiming_fan_out
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = conv(
      x,
      self.features,
      self.kernel_size,
      self.stride,
      use_bias=not self.norm,
      kernel_init=self.kernel_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="conv",
    )
    if self.norm == "layer":
      # Two-pass variance: over the few channels of a kernel's reduce step, E[x^2] - E[x]^2
      # cancels when they are close, and a row's result then depends on how XLA vectorised it.
      x = nn.LayerNorm(
        epsilon=1e-5,
        use_fast_variance=False,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="ln",
      )(x)
    elif self.norm:
      x = BatchNorm(
        self.bn_momentum, self.bn_epsilon, dtype=self.dtype, param_dtype=self.param_dtype, name="bn"
      )(x, train)
    return nn.relu(x) if self.act else x


class PointwiseConv(nn.Module):
  """A 1x1 convolution on rows, x: (N, C) -> (N, features); parameters as `nn.Dense`.

  The bias is one more row of the matmul's weights against a column of ones:
  XLA's CPU matmuls do not fuse a bias add, which costs another pass over the
  output (for the involution kernels, the largest tensor of the block).
  """

  features: int
  use_bias: bool = False
  kernel_init: nn.initializers.Initializer = kaiming_fan_out
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
    if not self.use_bias:
      x, kernel = promote_dtype(x, kernel, dtype=self.dtype)
      return x @ kernel
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    x = jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)
    return x @ jnp.concatenate([kernel, bias[None]], axis=0)


def conv(
  x: jax.Array,
  features: int,
  kernel_size: int,
  stride: int = 1,
  *,
  use_bias: bool = False,
  kernel_init=kaiming_fan_out,
  dtype=None,
  param_dtype=jnp.float32,
  name: str | None = None,
) -> jax.Array:
  """PyTorch-style Conv2d(padding=k//2) on NHWC; 1x1 as a Dense matmul.

  Must be called inside a compact module (it creates the submodule `name`).
  Output spatial size: ceil(H / stride) for odd kernel sizes.
  """
  if kernel_size == 1:
    x = x[:, ::stride, ::stride] if stride > 1 else x
    # A 2-D matmul: with (B, H, W) as three contracting axes the weight gradient
    # would make XLA transpose the activation gradient (a full strided copy).
    out = PointwiseConv(features, use_bias, kernel_init, dtype, param_dtype, name=name)(
      x.reshape(-1, x.shape[-1])
    )
    return out.reshape(x.shape[:-1] + (features,))
  pad = kernel_size // 2
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    (stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=use_bias,
    kernel_init=kernel_init,
    dtype=dtype,
    param_dtype=param_dtype,
    conv_general_dilated=_conv_for_flax,
    name=name,
  )(x)


def _conv_for_flax(
  lhs,
  rhs,
  window_strides,
  padding,
  *,
  lhs_dilation,
  rhs_dilation,
  dimension_numbers,
  feature_group_count,
  precision,
):
  """`nn.Conv`'s convolution, as `conv` configures it: NHWC, HWIO, no dilation."""
  del dimension_numbers  # flax's for channels-last inputs: NHWC, HWIO, NHWC.
  if (
    set(lhs_dilation or (1,)) | set(rhs_dilation or (1,)) != {1}
    or feature_group_count != 1
    or window_strides[0] != window_strides[1]
  ):
    raise NotImplementedError("conv: dilated, grouped or unevenly strided convolutions")
  return conv_nhwc(lhs, rhs, window_strides[0], tuple(map(tuple, padding)), precision)


def avg_pool_ceil(x: jax.Array, stride: int | Sequence[int]) -> jax.Array:
  """AvgPool(stride, stride) on (B, *S, C) whose output is ceil(S / stride) per dimension.

  The last, partial window (only when a size is not a multiple of the stride)
  averages the positions it has; otherwise identical to PyTorch's AvgPool2d.
  """
  n = x.ndim - 2
  strides = (stride,) * n if isinstance(stride, int) else tuple(stride)
  pad = tuple((0, output_size(size, s) * s - size) for size, s in zip(x.shape[1:-1], strides))
  return nn.avg_pool(x, strides, strides, padding=pad, count_include_pad=False)


def avg_pool_causal(x: jax.Array, stride: int) -> jax.Array:
  """x: (B, T, C) -> (B, ceil(T / stride), C); output t averages inputs t*s - s + 1 ... t*s.

  Only inputs up to the output's own position (the last tap of a causal
  involution) and inside the sequence are averaged: nothing from the future.
  """
  return nn.avg_pool(x, (stride,), (stride,), padding=((stride - 1, 0),), count_include_pad=False)


def max_pool(x: jax.Array, window: int, stride: int, pad: int) -> jax.Array:
  """PyTorch's MaxPool2d(window, stride, pad) on NHWC.

  x: (B, H, W, C) -> (B, (H + 2 pad - window) // stride + 1, (same for W), C).
  The running max of the window's strided slices of the (-inf)-padded input:
  the gradient goes to the first maximum of each window in row-major order, as
  in PyTorch, and NaN propagates. XLA's CPU backend differentiates this ~6x
  faster than `reduce_window` (select-and-scatter).
  """
  h, w = x.shape[1:3]
  out_hw = ((h + 2 * pad - window) // stride + 1, (w + 2 * pad - window) // stride + 1)
  xp = pad_hw(x, pad, value=-jnp.inf)
  out = None
  for u in range(window):
    for v in range(window):
      tap = tap_window(xp, u, v, out_hw, stride, dilation=1)
      out = tap if out is None else jnp.where((tap > out) | jnp.isnan(tap), tap, out)
  return out
