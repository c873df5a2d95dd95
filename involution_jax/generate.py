"""`involution-generate WORKDIR --prompt TEXT --length N`: text from a trained language model.

The model decodes one byte at a time through its caches (the convolutional mixers keep
their last K - 1 inputs, attention its keys and values): the cost per byte does not
grow with the text. Text is made in jit-compiled pieces of 256 bytes and printed as each
arrives, so a long generation shows its progress and holds only one piece in memory.
"""

from __future__ import annotations

import codecs
import math
import sys
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from involution_jax import cli
from involution_jax.data import text
from involution_jax.models import sequence
from involution_jax.weights import fitting_their_description, load_weights, model_from_info

# Tokens per compiled piece: text appears as it is made, memory stays that of one piece.
PIECE = 256


def generate_pieces(
  weights: str,
  prompt: str,
  length: int,
  *,
  temperature: float = 0.8,
  top_k: int = 0,
  seed: int = 0,
) -> Iterator[str]:
  """The text after `prompt` from the language model `weights` holds, `length` bytes in
  pieces of up to `PIECE` (a character cut between two pieces is joined); the pieces
  together are the text generated at once."""
  if length < 1:
    raise ValueError(f"--length must be >= 1, got {length}")
  if not 0 <= temperature < math.inf:  # NaN fails every comparison
    raise ValueError(f"--temperature must be a finite number >= 0, got {temperature}")
  if top_k < 0:
    raise ValueError(f"--top_k must be >= 0, got {top_k}")
  variables, info = load_weights(weights)
  if info.get("task") != "language_model":
    raise ValueError(
      f"{weights} holds a {info.get('task', 'classification')} model, not a language model"
    )
  tokens = text.encode(prompt)
  if tokens.size == 0:
    raise ValueError("--prompt is empty: give at least one character")
  model = model_from_info(info)
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


def generate_text(weights: str, prompt: str, length: int, **options) -> str:
  """`length` bytes of text after `prompt` (`generate_pieces`, joined)."""
  return "".join(generate_pieces(weights, prompt, length, **options))


@cli.command("involution-generate")
def main(argv: list[str] | None = None) -> int:
  """Parses `argv` (default: the command line), prints the prompt and what follows."""
  parser = cli.parser(
    "involution-generate",
    "Continue a prompt with a trained byte-level language model (e.g. --config charlm).",
    [
      'involution-generate runs/charlm --prompt "The with statement" --length 400',
      'involution-generate runs/charlm --prompt "def " --temperature 0 --length 200',
    ],
  )
  parser.add_argument("weights", help="a language model's training workdir or checkpoint")
  parser.add_argument("--prompt", required=True, help="text to continue (UTF-8)")
  parser.add_argument("--length", type=int, default=400, help="bytes to generate")
  parser.add_argument(
    "--temperature", type=float, default=0.8, help="sampling temperature; 0: greedy"
  )
  parser.add_argument("--top_k", type=int, default=0, help="sample among the k likeliest (0: all)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  pieces = generate_pieces(
    args.weights,
    args.prompt,
    args.length,
    temperature=args.temperature,
    top_k=args.top_k,
    seed=args.seed,
  )
  first = next(pieces)  # a mistake is one line, before any text
  sys.stdout.write(args.prompt + first)
  sys.stdout.flush()
  for piece in pieces:
    sys.stdout.write(piece)
    sys.stdout.flush()
  sys.stdout.write("\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
