"""`involution-generate WORKDIR --prompt TEXT --length N`: text from a trained language
model, printed as each piece arrives (`inference.generation`)."""

from __future__ import annotations

import sys

from involution_jax import cli


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
  cli.weights_argument(parser, help="a language model's training workdir or checkpoint")
  parser.add_argument("--prompt", required=True, help="text to continue (UTF-8)")
  parser.add_argument("--length", type=int, default=400, help="bytes to generate")
  parser.add_argument(
    "--temperature", type=float, default=0.8, help="sampling temperature; 0: greedy"
  )
  parser.add_argument("--top_k", type=int, default=0, help="sample among the k likeliest (0: all)")
  parser.add_argument(
    "--seed", type=int, default=0, help="the sampling's random seed (default: %(default)s)"
  )
  cli.output_arguments(parser, '{"prompt", "continuation"} once generated (no streaming)')
  args = parser.parse_args(argv)
  weights = cli.given_weights(parser, args)
  from involution_jax.inference.generation import generate_pieces

  pieces = generate_pieces(
    weights,
    args.prompt,
    args.length,
    temperature=args.temperature,
    top_k=args.top_k,
    seed=args.seed,
  )
  first = next(pieces)  # a mistake is one line, before any text
  if args.json:
    cli.print_result(args, dict(prompt=args.prompt, continuation=first + "".join(pieces)))
    return 0
  sys.stdout.write(args.prompt + first)
  sys.stdout.flush()
  for piece in pieces:
    sys.stdout.write(piece)
    sys.stdout.flush()
  sys.stdout.write("\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
