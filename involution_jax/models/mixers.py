"""Causal token mixers for sequence models: involution, DynamicConv, LightConv, a static
depthwise convolution, and attention. Each maps x: (B, T, D) -> (B, T, D), output t
seeing inputs up to t only, and decodes one step at a time with `decode=True` (a
`cache` collection, created by `init`, updated with `mutable=["cache"]`).

* "involution": the causal 1-D `Involution` layer (kernel from a reduce -> LayerNorm
  -> ReLU -> span bottleneck of the current position; optional softmax).
* "dynamic": DynamicConv (Wu et al. 2019): kernel = softmax(Linear(x_t)) per head,
  (K taps shared by the D / H channels of a head), DropConnect on the taps.
* "lightweight": LightConv: one static softmax-normalised kernel per head.
* "conv": a static depthwise causal convolution with bias (a TextCNN / TCN stand-in).
* "attention": causal multi-head self-attention (`jax.nn.dot_product_attention`),
  rotary positions by default, a key-value cache for decoding.

The convolutional mixers all run through `involution_jax.involution` (static kernels
broadcast over positions), so they share its memory-lean causal implementation.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from involution_jax.models.involution import Involution, decoding_window, softmax_taps
from involution_jax.ops import involution

Dtype = Any
MIXERS = ("involution", "dynamic", "lightweight", "conv", "attention")


def _check_heads(width: int, heads: int, name: str) -> None:
  if heads < 1 or width % heads:
    raise ValueError(f"{name}: width {width} must be divisible by heads={heads}")


def _causal_apply(module: nn.Module, x: jax.Array, kernel: jax.Array, span: int) -> jax.Array:
  """Causal involution of x (B, T, D) with kernel (B, T, G, K), or one decoding step;
  `module.method` is the op's formulation ("patches": the T x K x D unfold)."""
  if module.decode:
    recent = decoding_window(module, x, span)
    if recent is not None:
      return involution(recent, kernel, padding=((0, 0),), method=module.method)
  return involution(x, kernel, padding="CAUSAL", method=module.method)


class DynamicConv(nn.Module):
  """DynamicConv: per-position kernels softmax(W x_t) (heads x K), shared within a head."""

  kernel_size: int = 3
  heads: int = 8
  dropconnect: float = 0.0
  decode: bool = False
  dtype: Dtype | None = None
  method: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    _check_heads(x.shape[-1], self.heads, "DynamicConv")
    logits = nn.Dense(self.heads * self.kernel_size, dtype=self.dtype, name="kernel")(x)
    kernel = logits.reshape(*x.shape[:-1], self.heads, self.kernel_size)
    kernel = softmax_taps(kernel)
    kernel = nn.Dropout(self.dropconnect, deterministic=not train)(kernel)
    return _causal_apply(self, x, kernel, self.kernel_size - 1)


class LightConv(nn.Module):
  """LightConv: one static kernel per head (heads x K), softmax over its taps."""

  kernel_size: int = 3
  heads: int = 8
  dropconnect: float = 0.0
  decode: bool = False
  method: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    _check_heads(x.shape[-1], self.heads, "LightConv")
    weight = self.param(
      "kernel", nn.initializers.normal(0.1), (self.heads, self.kernel_size), jnp.float32
    )
    kernel = softmax_taps(weight).astype(x.dtype)
    kernel = nn.Dropout(self.dropconnect, deterministic=not train)(kernel)
    kernel = jnp.broadcast_to(kernel, (*x.shape[:-1], self.heads, self.kernel_size))
    return _causal_apply(self, x, kernel, self.kernel_size - 1)


class CausalConv(nn.Module):
  """A static depthwise causal convolution: y_t = b + sum_u w_u * x_{t-K+1+u} per channel."""

  kernel_size: int = 3
  decode: bool = False
  method: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    width = x.shape[-1]
    scale = 1.0 / self.kernel_size**0.5
    weight = self.param(
      "kernel", nn.initializers.normal(scale), (width, self.kernel_size), jnp.float32
    )
    bias = self.param("bias", nn.initializers.zeros, (width,), jnp.float32)
    kernel = jnp.broadcast_to(weight.astype(x.dtype), (*x.shape[:-1], width, self.kernel_size))
    return _causal_apply(self, x, kernel, self.kernel_size - 1) + bias.astype(x.dtype)


def rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding of x: (B, T, H, Dh) at integer `positions` (T,) or (B, T)."""
  half = x.shape[-1] // 2
  frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[..., None].astype(jnp.float32) * frequencies  # (..., T, half)
  angles = angles[..., None, :]  # a head axis
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  first, second = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)
  return out.astype(x.dtype)


class CausalSelfAttention(nn.Module):
  """Causal multi-head self-attention; `rope` rotary positions; decoding with a KV cache
  of `max_length` positions."""

  heads: int = 8
  rope: bool = True
  max_length: int = 2048
  decode: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    batch, length, width = x.shape
    _check_heads(width, self.heads, "CausalSelfAttention")
    head_dim = width // self.heads
    qkv = nn.DenseGeneral((3, self.heads, head_dim), dtype=self.dtype, name="qkv")(x)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, H, Dh)
    if not self.decode:
      if self.rope:
        positions = jnp.arange(length)
        q, k = rotary(q, positions), rotary(k, positions)
      out = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    else:
      ready = self.has_variable("cache", "keys")
      shape = (batch, self.max_length, self.heads, head_dim)
      keys = self.variable("cache", "keys", jnp.zeros, shape, k.dtype)
      values = self.variable("cache", "values", jnp.zeros, shape, v.dtype)
      index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
      if not ready:  # init: the cache is created, the output is not used
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True)
      else:
        if length != 1:
          raise ValueError(f"decoding takes one step at a time, x (B, 1, D); got {x.shape}")
        position = index.value
        if self.rope:
          q, k = rotary(q, position[None]), rotary(k, position[None])
        keys.value = jax.lax.dynamic_update_slice(keys.value, k, (0, position, 0, 0))
        values.value = jax.lax.dynamic_update_slice(values.value, v, (0, position, 0, 0))
        index.value = position + 1
        seen = jnp.arange(self.max_length) <= position  # (L,)
        out = jax.nn.dot_product_attention(
          q, keys.value, values.value, mask=seen[None, None, None, :]
        )
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name="out")(out)


def make_mixer(
  name: str,
  *,
  kernel_size: int,
  heads: int,
  group_channels: int,
  reduction_ratio: int,
  kernel_normalization: str | None,
  dropconnect: float,
  rope: bool,
  max_length: int,
  decode: bool,
  dtype: Dtype | None,
  module_name: str,
  method: str = "auto",
) -> nn.Module:
  """The mixer `name` (one of `MIXERS`) with the fields that apply to it; `method`: the
  convolutional mixers' op formulation (see `involution_jax.involution`)."""
  if name == "involution":
    return Involution(
      kernel_size=(kernel_size,),
      padding="CAUSAL",
      group_channels=group_channels,
      reduction_ratio=reduction_ratio,
      kernel_normalization=kernel_normalization,
      kernel_dropout=dropconnect,
      decode=decode,
      dtype=dtype,
      method=method,
      name=module_name,
    )
  if name == "dynamic":
    return DynamicConv(kernel_size, heads, dropconnect, decode, dtype, method, name=module_name)
  if name == "lightweight":
    return LightConv(kernel_size, heads, dropconnect, decode, method, name=module_name)
  if name == "conv":
    return CausalConv(kernel_size, decode, method, name=module_name)
  if name == "attention":
    return CausalSelfAttention(heads, rope, max_length, decode, dtype, name=module_name)
  raise ValueError(f"unknown mixer {name!r}; expected one of {MIXERS}")
