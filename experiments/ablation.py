"""The paper's ablation on text: one involution knob at a time in the byte-level LM.

Knobs (the others at `charlm:involution`'s values): `kernel_size` (every block's K),
`group_channels` (channels sharing one kernel) and `reduction_ratio` (the kernel
branch's bottleneck). Writes a markdown table and a PNG (bits per byte against each
knob's value) and prints the table.

    python experiments/ablation.py                                   # 3 knobs x 4 values
    python experiments/ablation.py --knobs kernel_size --values 3,7,15,31 \\
        --set num_train_steps=600
"""

from __future__ import annotations

import argparse
import json
import os

from compare_mixers import run
from matplotlib.figure import Figure

from involution_jax import configs

KNOBS = {
  "kernel_size": (3, 7, 15, 31),
  "group_channels": (1, 4, 16, 64),
  "reduction_ratio": (1, 2, 4, 8),
}


def _override(knob: str, value: int, depth: int) -> str:
  if knob == "kernel_size":  # the same K in every block
    return f"model_kwargs.kernel_sizes={(value,) * depth}"
  return f"model_kwargs.{knob}={value}"


def draw(results: dict[str, list[dict]], out: str) -> None:
  figure = Figure(figsize=(4.5 * len(results), 3.6), layout="constrained")
  axes = figure.subplots(1, len(results), squeeze=False)[0]
  for ax, (knob, rows) in zip(axes, results.items()):
    values = [r["value"] for r in rows]
    for split, style in (("validation", "o-"), ("test", "s--")):
      ax.plot(values, [r[f"{split}_bits_per_byte"] for r in rows], style, label=split)
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.set_xlabel(knob)
    ax.set_ylabel("bits per byte")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  figure.suptitle("involution LM (charlm): one knob at a time")
  figure.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--knobs", default=",".join(KNOBS))
  parser.add_argument(
    "--values", default=None, help="values for a single knob (default: the paper's)"
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--set", action="append", default=[], help="a config override FIELD=VALUE")
  parser.add_argument("--root", default="runs/ablation", help="the runs' workdirs go here")
  args = parser.parse_args(argv)
  knobs = args.knobs.split(",")
  unknown = [k for k in knobs if k not in KNOBS]
  if unknown or (args.values and len(knobs) != 1):
    parser.error(f"--knobs: some of {', '.join(KNOBS)}; --values goes with one knob")
  results, lines = (
    {},
    [
      "| knob | value | params | validation bits/byte | test bits/byte |",
      "|---|---:|---:|---:|---:|",
    ],
  )
  base = configs.get_config("charlm:involution", args.set).model_kwargs
  trained = {}  # a knob at its default value is the same run for every knob: train it once
  for knob in knobs:
    values = [int(v) for v in args.values.split(",")] if args.values else KNOBS[knob]
    results[knob] = []
    for value in values:
      override = _override(knob, value, base.depth)
      default = configs.get_config("charlm:involution", [*args.set, override]).model_kwargs == base
      name = "default" if default else f"{knob}_{value}"
      if name not in trained:
        overrides = args.set if default else [*args.set, override]
        trained[name] = run(
          "charlm", "involution", args.seed, overrides, os.path.join(args.root, name)
        )
      row = trained[name]
      results[knob].append(dict(row, knob=knob, value=value))
      lines.append(
        f"| {knob} | {value} | {row['params'] / 1e6:.2f}M | "
        f"{row['validation_bits_per_byte']:.3f} | {row['test_bits_per_byte']:.3f} |"
      )
  os.makedirs(args.root, exist_ok=True)
  markdown = "\n".join(lines) + f"\n\nseed {args.seed}; overrides: {' '.join(args.set) or 'none'}."
  with open(os.path.join(args.root, "ablation.md"), "w") as f:
    f.write(markdown + "\n")
  with open(os.path.join(args.root, "ablation.json"), "w") as f:
    json.dump(results, f, indent=2)
  draw(results, os.path.join(args.root, "ablation.png"))
  print(markdown)
  print(f"\n{os.path.abspath(os.path.join(args.root, 'ablation.png'))}")


if __name__ == "__main__":
  main()
