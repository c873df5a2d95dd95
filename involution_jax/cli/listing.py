"""`involution-list [models|configs|pretrained]`: what exists, by name, with a line each.

The names come from `involution_jax.list_models()`, `list_configs()` and
`list_pretrained()`.
"""

from __future__ import annotations

import inspect
import sys

from involution_jax import cli

KINDS = ("models", "configs", "pretrained")


def _first_paragraph(obj) -> str:
  doc = inspect.getdoc(getattr(obj, "func", obj)) or ""  # a functools.partial: its function's
  return " ".join(doc.split("\n\n")[0].split())


def listing(kind: str, pattern: str) -> list[dict]:
  """[{"name", "description", ...}] of one kind, the names matching `pattern`."""
  if kind == "models":
    from involution_jax.models.registry import MODELS, list_models

    return [{"name": n, "description": _first_paragraph(MODELS[n])} for n in list_models(pattern)]
  if kind == "configs":
    from involution_jax import configs

    return [
      {"name": n, "description": configs.description(n)} for n in configs.list_configs(pattern)
    ]
  from involution_jax.weights import zoo

  return [
    {
      "name": n,
      "description": f"RedNet-{zoo.REGISTRY[n].depth}, ImageNet-1k, PaddleClas's weights",
      "params": zoo.REGISTRY[n].params,
      "top1": zoo.REGISTRY[n].top1_paddle,
    }
    for n in zoo.list_pretrained(pattern)
  ]


def _text(kind: str, rows: list[dict]) -> str:
  width = max((len(r["name"]) for r in rows), default=0)
  lines = [f"{kind}:"]
  for r in rows:
    extra = f" ({r['params'] / 1e6:.2f} M parameters, top-1 {r['top1']})" if "top1" in r else ""
    lines.append(f"  {r['name']:<{width}}  {r['description']}{extra}")
  return "\n".join(lines)


@cli.command("involution-list")
def main(argv: list[str] | None = None) -> int:
  """Parses `argv` (default: the command line), prints the listings asked for."""
  parser = cli.parser(
    "involution-list",
    "List the models (create_model names, config.model), the shipped configs "
    "(--config NAME) and the pretrained weights (names that work wherever WEIGHTS does).",
    [
      "involution-list",
      "involution-list configs",
      "involution-list models --pattern 'rednet*' --json",
    ],
  )
  parser.add_argument(
    "kinds",
    nargs="*",
    metavar="KIND",
    help=f"some of {', '.join(KINDS)} (default: all three)",
  )
  parser.add_argument(
    "--pattern", default="*", help="only names matching this shell-style pattern, e.g. 'rednet*'"
  )
  cli.output_arguments(parser, "{kind: [{name, description, ...}]}")
  args = parser.parse_args(argv)
  for kind in args.kinds:
    if kind not in KINDS:
      parser.error(f"argument KIND: {kind!r} is not one of {', '.join(KINDS)}")
  kinds = list(dict.fromkeys(args.kinds)) or list(KINDS)
  found = {kind: listing(kind, args.pattern) for kind in kinds}
  cli.print_result(args, found, "\n".join(_text(k, rows) for k, rows in found.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
