"""The involution layer, with its kernel-generation branch, in 1, 2 or 3 dimensions.

In 2-D with the defaults it is the official RedNet layer: sub-module names
follow the official code one to one (`conv1.conv`, `conv1.bn`, `conv2.conv`),
so official checkpoints convert by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from involution_jax.models.layers import ConvModule, avg_pool_causal, avg_pool_ceil
from involution_jax.ops import involution, output_size, padded_output_size, padding_pairs

Dtype = Any

# Names of the kernel-generation branch's outputs, for `jax.checkpoint` policies
# (e.g. `jax.checkpoint_policies.save_anything_except_these_names(*KERNEL_BRANCH)`).
KERNEL_BRANCH = ("involution_hidden", "involution_kernel")
NORMS = ("auto", "batch", "layer", None)


def _per_dim(name: str, value, n: int) -> tuple[int, ...]:
  values = tuple(value) if isinstance(value, Sequence) else (value,) * n
  if len(values) != n or any(not isinstance(v, (int, np.integer)) or v < 1 for v in values):
    raise ValueError(
      f"Involution: {name} must be >= 1 (an int, or {n} ints: one per spatial dimension "
      f"of the input), got {value!r}"
    )
  return values


def softmax_taps(kernel: jax.Array) -> jax.Array:
  """Softmax over the last axis (a kernel's taps), in at least float32, in `kernel`'s dtype."""
  compute = jnp.promote_types(kernel.dtype, jnp.float32)
  return jax.nn.softmax(kernel.astype(compute), axis=-1).astype(kernel.dtype)


def decoding_window(module: nn.Module, x: jax.Array, span: int) -> jax.Array | None:
  """One decoding step of a causal layer: x (B, 1, C) after the last `span` inputs,
  (B, span + 1, C), which `module`'s `cache` collection keeps (`inputs`, created as
  zeros). None at `init`, where the cache is only created."""
  ready = module.has_variable("cache", "inputs")
  cache = module.variable("cache", "inputs", jnp.zeros, (x.shape[0], span, x.shape[-1]), x.dtype)
  if not ready:
    return None
  if x.shape[1] != 1:
    raise ValueError(
      f"{type(module).__name__}(decode=True) takes one step at a time, x (B, 1, C); "
      f"got shape {x.shape}"
    )
  recent = jnp.concatenate([cache.value, x], axis=1)
  cache.value = recent[:, 1:]
  return recent


class Involution(nn.Module):
  """Involution layer with its kernel-generation branch (the official RedNet layer in 2-D).

  kernel = conv2(relu(norm(conv1(avg_pool(x))))): a 1x1 conv C -> C // r with
  a norm and ReLU, then a 1x1 conv -> prod(window) * G (with bias), whose
  channel g * prod(window) + t is tap t (row-major) of group g;
  G = C // group_channels. The average pool (window = stride) runs only for
  stride > 1. x: (B, *S, C) with 1-3 spatial dimensions.

  Attributes:
    kernel_size: an int (the same K in every spatial dimension of the input,
      K x K in 2-D as the paper) or one size per dimension. Odd for SAME.
    stride: output subsampling, an int or one per dimension; with SAME and
      CAUSAL the output is ceil(S / stride). In 2-D with sizes divisible by
      the stride this equals the official layer; for other sizes (where the
      official layer fails) the pool's last window averages only the
      positions inside the input.
    group_channels: channels sharing one kernel (16 in the paper).
    reduction_ratio: r of the kernel-generation bottleneck.
    dilation: spacing of the taps, an int or one per dimension.
    padding: "SAME", "CAUSAL" (1-D: output t sees inputs up to t*s only, the
      kernel branch included: its pool averages inputs t*s - s + 1 ... t*s),
      or explicit (low, high) pairs that keep the output at ceil(S / stride).
    norm: the kernel branch's norm: "batch" (BatchNorm, parameters `conv1.bn`),
      "layer" (LayerNorm per position, `conv1.ln`) or None; "auto" (default)
      is "batch", and "layer" for CAUSAL, since batch statistics over time let
      later inputs reach earlier outputs in train mode.
    kernel_normalization: None (the paper) or "softmax" over each kernel's
      taps (DynamicConv's choice).
    kernel_dropout: DropConnect rate on the generated taps in train mode (rng
      "dropout"), as fairseq's `weight_dropout`; 0 by default.
    decode: CAUSAL 1-D, stride 1 only: incremental decoding. `init` creates the
      `cache` collection (the last (K - 1) * dilation inputs, zeros); then each
      call with `mutable=["cache"]` takes one step x: (B, 1, C) and returns its
      output (B, 1, C), as the full causal pass would at that position.
    method: the involution formulation, see `involution_jax.involution`.

  The generated kernel (B, *O, G, *window) is sown as `intermediates/kernel`
  for inspection (`mutable=["intermediates"]`), and the branch's outputs are
  named (`KERNEL_BRANCH`) for rematerialisation policies.
  """

  kernel_size: int | Sequence[int] = 7
  stride: int | Sequence[int] = 1
  group_channels: int = 16
  reduction_ratio: int = 4
  dilation: int | Sequence[int] = 1
  padding: str | Sequence[tuple[int, int]] = "SAME"
  norm: str | None = "auto"
  kernel_normalization: str | None = None
  kernel_dropout: float = 0.0
  decode: bool = False
  method: str = "auto"
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def _check(self, x: jax.Array):
    """Validated (window, stride, dilation, norm) for input `x`."""
    if not 3 <= x.ndim <= 5:
      raise ValueError(
        "Involution expects x of rank 3, 4 or 5 (B, *spatial, C), e.g. "
        f"(B, H, W, C), got shape {x.shape}"
      )
    n = x.ndim - 2
    channels = x.shape[-1]
    if self.group_channels < 1 or channels % self.group_channels:
      raise ValueError(
        f"Involution: channels C={channels} must be divisible by "
        f"group_channels={self.group_channels}"
      )
    window = _per_dim("kernel_size", self.kernel_size, n)
    if self.padding == "SAME" and any(k % 2 == 0 for k in window):
      raise ValueError(f"Involution: kernel_size must be odd and >= 1, got {self.kernel_size}")
    stride = _per_dim("stride", self.stride, n)
    dilation = _per_dim("dilation", self.dilation, n)
    if not 1 <= self.reduction_ratio <= channels:
      raise ValueError(
        f"Involution: reduction_ratio must be in [1, C={channels}], got {self.reduction_ratio}"
      )
    if self.norm not in NORMS:
      raise ValueError(f"Involution: unknown norm {self.norm!r}; expected one of {NORMS}")
    if self.kernel_normalization not in (None, "softmax"):
      raise ValueError(
        "Involution: kernel_normalization must be None or 'softmax', got "
        f"{self.kernel_normalization!r}"
      )
    if not 0 <= self.kernel_dropout < 1:
      raise ValueError(f"Involution: kernel_dropout must be in [0, 1), got {self.kernel_dropout}")
    try:
      pairs = padding_pairs(self.padding, window, dilation)
    except ValueError as e:
      raise ValueError(f"Involution: {e}") from None
    if not isinstance(self.padding, str):
      out = tuple(
        padded_output_size(size, k, s, d, lo, hi)
        for size, k, s, d, (lo, hi) in zip(x.shape[1:-1], window, stride, dilation, pairs)
      )
      wanted = tuple(output_size(size, s) for size, s in zip(x.shape[1:-1], stride))
      if out != wanted:
        raise ValueError(
          f"Involution: padding {self.padding} gives output {out}; the kernel "
          f"branch needs ceil(size / stride) = {wanted} (use the op "
          "`involution_jax.involution` for other output sizes)"
        )
    if self.decode and (self.padding != "CAUSAL" or set(stride) != {1}):
      raise ValueError(
        "Involution: decode needs padding='CAUSAL' and stride 1, got "
        f"padding={self.padding!r}, stride={self.stride}"
      )
    norm = self.norm
    if norm == "auto":
      norm = "layer" if self.padding == "CAUSAL" else "batch"
    return window, stride, dilation, norm

  def _kernel(self, pooled: jax.Array, window, groups: int, norm, train: bool) -> jax.Array:
    """The kernel branch: (B, *O, C) -> (B, *O, G, *window)."""
    common = dict(
      bn_momentum=self.bn_momentum,
      bn_epsilon=self.bn_epsilon,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )
    hidden = ConvModule(
      pooled.shape[-1] // self.reduction_ratio, norm=norm or False, name="conv1", **common
    )(pooled, train)
    hidden = checkpoint_name(hidden, KERNEL_BRANCH[0])
    taps = int(np.prod(window))
    kernel = ConvModule(taps * groups, norm=False, act=False, name="conv2", **common)(hidden, train)
    kernel = kernel.reshape(kernel.shape[:-1] + (groups, taps))
    if self.kernel_normalization == "softmax":
      kernel = softmax_taps(kernel)
    if self.kernel_dropout > 0:
      kernel = nn.Dropout(self.kernel_dropout, deterministic=not train)(kernel)
    kernel = checkpoint_name(kernel.reshape(kernel.shape[:-1] + tuple(window)), KERNEL_BRANCH[1])
    self.sow("intermediates", "kernel", kernel)
    return kernel

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: (B, *S, C) -> (B, *O, C), O = ceil(S / stride) (SAME, CAUSAL)."""
    window, stride, dilation, norm = self._check(x)
    groups = x.shape[-1] // self.group_channels
    if self.dtype is not None:
      x = x.astype(self.dtype)
    if self.decode:
      recent = decoding_window(self, x, (window[0] - 1) * dilation[0])
      if recent is not None:
        kernel = self._kernel(x, window, groups, norm, train)
        return involution(recent, kernel, dilation=dilation, padding=((0, 0),), method=self.method)
    if set(stride) == {1}:
      pooled = x
    elif self.padding == "CAUSAL":
      pooled = avg_pool_causal(x, stride[0])
    else:
      pooled = avg_pool_ceil(x, stride)
    kernel = self._kernel(pooled, window, groups, norm, train)
    return involution(
      x, kernel, stride=stride, dilation=dilation, padding=self.padding, method=self.method
    )
