"""A sequence model whose token mixer is a field, and generation with its decoding caches.

Every comparison between mixers differs in the mixer alone: embedding -> `depth`
pre-norm residual blocks [LayerNorm -> Dense(D -> 2D) -> GLU -> mixer -> Dense(D)]
and [LayerNorm -> MLP] -> LayerNorm -> head. The mixers (`mixers.MIXERS`) are causal,
so the "lm" head gives next-token logits at every position; the "pooled" head averages
the real tokens (mask 1) into class logits, and padding (mask 0) is zeroed before
every mixer, so it never reaches a real token's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from involution_jax.models.mixers import MIXERS, make_mixer

Dtype = Any
HEADS = ("lm", "pooled")


class SequenceModel(nn.Module):
  """Tokens (B, T) int -> logits: (B, T, num_classes) for head "lm", (B, num_classes)
  for "pooled".

  Attributes:
    mixer: one of `mixers.MIXERS`: "involution", "dynamic", "lightweight", "conv",
      "attention".
    vocab_size: token ids are 0 ... vocab_size - 1.
    num_classes: outputs per position ("lm": the vocabulary) or per sequence.
    width, depth, mlp_ratio: D, blocks, the MLP's hidden size / D.
    kernel_sizes: the convolutional mixers' K, one per block (DynamicConv grows
      them with depth: 3, 7, 15, 31) or one for all.
    heads: DynamicConv, LightConv and attention heads (D / heads channels each).
    group_channels, reduction_ratio, kernel_normalization: the involution mixer's.
    dropout: after each block's output projection and MLP, in train mode.
    dropconnect: on the dynamic kernels' taps (involution, dynamic, lightweight).
    positions: attention only: "rope" (rotary) or "learned" (an embedding of
      `max_length` positions); the convolutions need none.
    max_length: the longest sequence attention decodes (its cache) or learns positions for.
    decode: one token per call from a `cache` collection (see `generate`).
    method: the convolutional mixers' op formulation (`involution_jax.involution`;
      "patches" is the T x K x D unfold of fairseq's DynamicConv, for comparison).
  """

  mixer: str = "involution"
  vocab_size: int = 256
  num_classes: int = 256
  head: str = "lm"
  width: int = 256
  depth: int = 4
  kernel_sizes: int | Sequence[int] = (3, 7, 15, 31)
  heads: int = 8
  group_channels: int = 16
  reduction_ratio: int = 4
  kernel_normalization: str | None = None
  dropout: float = 0.1
  dropconnect: float = 0.0
  mlp_ratio: int = 4
  positions: str = "rope"
  max_length: int = 2048
  decode: bool = False
  dtype: Dtype | None = None
  method: str = "auto"

  def _kernel_sizes(self) -> tuple[int, ...]:
    sizes = self.kernel_sizes
    sizes = (sizes,) * self.depth if isinstance(sizes, int) else tuple(sizes)
    if len(sizes) != self.depth or any(k < 1 for k in sizes):
      raise ValueError(
        f"SequenceModel: kernel_sizes must be one size >= 1 or {self.depth} (depth) of them, "
        f"got {self.kernel_sizes!r}"
      )
    return sizes

  def _check(self, tokens: jax.Array) -> None:
    if self.mixer not in MIXERS:
      raise ValueError(f"SequenceModel: unknown mixer {self.mixer!r}; expected one of {MIXERS}")
    if self.head not in HEADS:
      raise ValueError(f"SequenceModel: unknown head {self.head!r}; expected one of {HEADS}")
    if self.positions not in ("rope", "learned"):
      raise ValueError(
        f"SequenceModel: positions must be 'rope' or 'learned', got {self.positions!r}"
      )
    if tokens.ndim != 2:
      raise ValueError(f"SequenceModel expects tokens (B, T), got shape {tokens.shape}")
    if not self.decode and tokens.shape[1] > self.max_length and self.mixer == "attention":
      raise ValueError(
        f"SequenceModel: {tokens.shape[1]} tokens exceed max_length={self.max_length}"
      )

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
    """tokens: (B, T) ints (floats are cast); mask: (B, T), 1 for real tokens (default all)."""
    self._check(tokens)
    tokens = tokens.astype(jnp.int32)
    mask = jnp.ones(tokens.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    dense = partial(nn.Dense, dtype=self.dtype)
    x = nn.Embed(self.vocab_size, self.width, name="embed")(tokens)
    if self.mixer == "attention" and self.positions == "learned":
      table = self.param(
        "positions", nn.initializers.normal(0.02), (self.max_length, self.width), jnp.float32
      )
      if self.decode:
        index = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
        x = x + jax.lax.dynamic_slice_in_dim(table, index.value, 1)[None]
        if not self.is_initializing():
          index.value = index.value + 1
      else:
        x = x + table[None, : tokens.shape[1]]
    drop = nn.Dropout(self.dropout, deterministic=not train)
    for i, kernel_size in enumerate(self._kernel_sizes()):
      h = nn.LayerNorm(dtype=self.dtype, name=f"block{i}_norm1")(x)
      h = nn.glu(dense(2 * self.width, name=f"block{i}_in")(h)) * mask[..., None]
      mixer = make_mixer(
        self.mixer,
        kernel_size=kernel_size,
        heads=self.heads,
        group_channels=self.group_channels,
        reduction_ratio=self.reduction_ratio,
        kernel_normalization=self.kernel_normalization,
        dropconnect=self.dropconnect,
        rope=self.positions == "rope",
        max_length=self.max_length,
        decode=self.decode,
        dtype=self.dtype,
        module_name=f"block{i}_mixer",
        method=self.method,
      )
      h = mixer(h, train)
      x = x + drop(dense(self.width, name=f"block{i}_out")(h))
      h = nn.LayerNorm(dtype=self.dtype, name=f"block{i}_norm2")(x)
      h = dense(self.width, name=f"block{i}_mlp_out")(
        nn.gelu(dense(self.mlp_ratio * self.width, name=f"block{i}_mlp_in")(h))
      )
      x = x + drop(h)
    x = nn.LayerNorm(dtype=self.dtype, name="norm")(x)
    if self.head == "pooled":
      x = jnp.sum(x * mask[..., None], axis=1) / jnp.maximum(jnp.sum(mask, 1, keepdims=True), 1)
    return dense(self.num_classes, name="head")(x).astype(jnp.float32)


def _decoding_step(model: SequenceModel, variables: dict):
  """(cache, tokens (B,)) -> (cache, logits (B, V)): one position through the caches."""
  decoder = model.clone(decode=True)
  params = {k: v for k, v in variables.items() if k != "cache"}

  def step(cache, token):
    logits, updates = decoder.apply(
      {**params, "cache": cache}, token[:, None], train=False, mutable=["cache"]
    )
    return updates["cache"], logits[:, 0]

  return decoder, step


def check_generation(model: SequenceModel, prompt_length: int, length: int) -> None:
  """A ValueError unless `model` can continue a prompt of `prompt_length` by `length`."""
  if model.head != "lm":
    raise ValueError(f"generate needs a model with head 'lm', got {model.head!r}")
  if prompt_length < 1 or length < 1:
    raise ValueError(f"generate: prompt and length must be >= 1, got {prompt_length}, {length}")
  if model.mixer == "attention" and prompt_length + length > model.max_length:
    raise ValueError(
      f"generate: prompt {prompt_length} + length {length} exceed max_length={model.max_length}"
    )


def prefill(model: SequenceModel, variables: dict, prompt: jax.Array) -> tuple:
  """The decoding state after `prompt` (B, P) ints: (the caches, the next logits (B, V))."""
  decoder, step = _decoding_step(model, variables)
  batch = prompt.shape[0]
  cache = decoder.init(jax.random.PRNGKey(0), jnp.zeros((batch, 1), jnp.int32), train=False)
  cache, logits = jax.lax.scan(step, cache["cache"], prompt.T)  # the prompt's own steps
  return cache, logits[-1]


def sample(
  model: SequenceModel,
  variables: dict,
  state: tuple,
  length: int,
  *,
  temperature: float = 1.0,
  top_k: int = 0,
  rng: jax.Array,
  offset: int | jax.Array = 0,
) -> tuple[jax.Array, tuple]:
  """`length` tokens from a decoding `state` (`prefill`'s): ((B, length) ints, the state
  after them). Token i is drawn with `fold_in(rng, offset + i)`, so text generated in
  pieces (each `offset` the tokens before it) is the text generated at once."""
  _, step = _decoding_step(model, variables)

  def pick(logits, key):
    if temperature == 0:
      return jnp.argmax(logits, axis=-1)
    if top_k > 0:
      cut = jax.lax.top_k(logits, top_k)[0][:, -1:]
      logits = jnp.where(logits < cut, -jnp.inf, logits)
    return jax.random.categorical(key, logits / temperature, axis=-1)

  def one(carry, i):
    cache, logits = carry
    token = pick(logits, jax.random.fold_in(rng, i)).astype(jnp.int32)
    return step(cache, token), token

  state, tokens = jax.lax.scan(one, state, offset + jnp.arange(length))
  return tokens.T, state


def generate(
  model: SequenceModel,
  variables: dict,
  prompt: jax.Array,
  length: int,
  *,
  temperature: float = 1.0,
  top_k: int = 0,
  rng: jax.Array | None = None,
) -> jax.Array:
  """`length` tokens after `prompt` (B, P) ints, one at a time through the decoding caches.

  Each step costs the same whatever the position: the convolutional mixers keep
  their last K - 1 inputs, attention its keys and values (up to `max_length`).
  temperature 0 is greedy (argmax); top_k > 0 samples among the k likeliest.
  Returns (B, length) ints. Jit it with `length`, `temperature` and `top_k` static.
  """
  check_generation(model, prompt.shape[1], length)
  state = prefill(model, variables, prompt)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  tokens, _ = sample(model, variables, state, length, temperature=temperature, top_k=top_k, rng=rng)
  return tokens
