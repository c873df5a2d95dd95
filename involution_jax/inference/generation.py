"""Text from a trained language model (`involution-generate`).

The model decodes one byte at a time through its caches (the convolutional mixers keep
their last K - 1 inputs, attention its keys and values): the cost per byte does not
grow with the text. Text is made in jit-compiled pieces of 256 bytes and printed as each
arrives, so a long generation shows its progress and holds only one piece in memory.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from involution_jax.data import text
from involution_jax.models import sequence
from involution_jax.tasks import task_named
from involution_jax.weights import fitting_their_description, load_weights, model_from_info

# Tokens per compiled piece: text appears as it is made, memory stays that of one piece.
PIECE = 256


def _check_options(length: int, temperature: float = 0.8, top_k: int = 0, seed: int = 0) -> None:
  if length < 1:
    raise ValueError(f"--length must be >= 1, got {length}")
  if not 0 <= temperature < math.inf:  # NaN fails every comparison
    raise ValueError(f"--temperature must be a finite number >= 0, got {temperature}")
  if top_k < 0:
    raise ValueError(f"--top_k must be >= 0, got {top_k}")


def continue_text(
  model: nn.Module,
  variables: dict,
  prompt: str,
  length: int,
  *,
  temperature: float = 0.8,
  top_k: int = 0,
  seed: int = 0,
) -> Iterator[str]:
  """The text after `prompt` from a language `model` with `variables`, `length` bytes in
  pieces of up to `PIECE` (a character cut between two pieces is joined); the pieces
  together are the text generated at once. `temperature` 0: greedy; `top_k` > 0: sample
  among the k likeliest bytes."""
  _check_options(length, temperature, top_k)
  tokens = text.encode(prompt)
  if tokens.size == 0:
    raise ValueError("--prompt is empty: give at least one character")
  sequence.check_generation(model, tokens.size, length)
  start = jax.jit(lambda v, p: sequence.prefill(model, v, p))
  more = jax.jit(
    lambda v, state, rng, offset, n: sequence.sample(
      model, v, state, n, temperature=temperature, top_k=top_k, rng=rng, offset=offset
    ),
    static_argnums=4,
  )
  with fitting_their_description():
    state = start(variables, jnp.asarray(tokens, jnp.int32)[None])
  rng = jax.random.PRNGKey(seed)
  utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
  for offset in range(0, length, PIECE):
    piece, state = more(variables, state, rng, offset, min(PIECE, length - offset))
    yield utf8.decode(np.asarray(jax.device_get(piece)[0], np.uint8).tobytes())
  yield utf8.decode(b"", final=True)


def generate_pieces(weights: str, prompt: str, length: int, **options) -> Iterator[str]:
  """`continue_text` (with its `options`) of the language model `weights` holds; the
  options are checked before the weights load."""
  _check_options(length, **options)
  variables, info = load_weights(weights)
  if not task_named(info.task).generates_text:
    raise ValueError(f"{weights} holds a {info.task} model, not a language model")
  yield from continue_text(model_from_info(info), variables, prompt, length, **options)


def generate_text(weights: str, prompt: str, length: int, **options) -> str:
  """`length` bytes of text after `prompt` (`generate_pieces`, joined)."""
  return "".join(generate_pieces(weights, prompt, length, **options))
