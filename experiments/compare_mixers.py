"""Token mixers side by side: the same sequence model, budget and data, one mixer apart.

For each mixer and seed: train `--config TASK:MIXER` in its own workdir, then score
the validation and test splits. Writes a markdown table (mean and spread over the
seeds) and the raw numbers as JSON, and prints the table.

    python experiments/compare_mixers.py --task charlm --seeds 0,1,2
    python experiments/compare_mixers.py --task sentiment --mixers involution,conv \\
        --set num_train_steps=300

Every figure in the README's sequence tables comes from a command like these,
printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from involution_jax import configs
from involution_jax.models import create_model
from involution_jax.models.mixers import MIXERS
from involution_jax.models.rednet import count_params
from involution_jax.training.evaluator import evaluate_weights
from involution_jax.training.trainer import train_and_evaluate

METRIC = {"charlm": "bits_per_byte", "sentiment": "accuracy"}


def _params(config) -> int:
  model = create_model(
    config.model, num_classes=config.get("num_classes") or 2, **config.model_kwargs
  )
  shapes = jax.eval_shape(
    lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, config.context), jnp.int32), train=False
    )
  )
  return count_params(shapes["params"])


def run(task: str, mixer: str, seed: int, overrides: list[str], workdir: str) -> dict:
  """Trains `task:mixer` with `overrides` in `workdir`; its scores, size and speed."""
  config = configs.get_config(f"{task}:{mixer}", [*overrides, f"seed={seed}"])
  start = time.time()
  metrics = train_and_evaluate(config, workdir)
  seconds = time.time() - start
  scores = {
    split: evaluate_weights(
      configs.get_config(f"{task}:{mixer}", [*overrides, f"eval_split={split}"]), workdir
    )
    for split in ("validation", "test")
  }
  tokens_per_step = config.batch_size * config.context
  return dict(
    mixer=mixer,
    seed=seed,
    params=_params(config),
    steps=metrics["steps"],
    train_seconds=seconds,
    tokens_per_second=(metrics["examples_per_second"] or 0) * config.context,
    tokens_per_step=tokens_per_step,
    **{
      f"{split}_{k}": v for split, s in scores.items() for k, v in s.items() if isinstance(v, float)
    },
  )


def table(task: str, rows: list[dict]) -> str:
  metric = METRIC[task]
  lines = [
    f"| mixer | params | validation {metric} | test {metric} | tokens/s | train s |",
    "|---|---:|---:|---:|---:|---:|",
  ]
  for mixer in dict.fromkeys(r["mixer"] for r in rows):
    mine = [r for r in rows if r["mixer"] == mixer]
    cell = lambda key: (
      f"{np.mean([r[key] for r in mine]):.3f}"
      + (f" ± {np.std([r[key] for r in mine]):.3f}" if len(mine) > 1 else "")
    )
    lines.append(
      f"| {mixer} | {mine[0]['params'] / 1e6:.2f}M | {cell(f'validation_{metric}')} | "
      f"{cell(f'test_{metric}')} | {np.mean([r['tokens_per_second'] for r in mine]):,.0f} | "
      f"{np.mean([r['train_seconds'] for r in mine]):.0f} |"
    )
  seeds = sorted({r["seed"] for r in rows})
  lines.append(f"\n{len(seeds)} seed(s) ({', '.join(map(str, seeds))}); mean ± standard deviation.")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--task", choices=sorted(METRIC), default="charlm")
  parser.add_argument("--mixers", default=",".join(MIXERS))
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--set", action="append", default=[], help="a config override FIELD=VALUE")
  parser.add_argument("--root", default="runs/mixers", help="the runs' workdirs go here")
  parser.add_argument("--out", default=None, help="markdown file (default: ROOT/TASK.md)")
  args = parser.parse_args(argv)
  out = args.out or os.path.join(args.root, f"{args.task}.md")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  raw = os.path.splitext(out)[0] + ".json"
  rows = []
  if os.path.exists(raw):  # a rerun keeps the rows it already has and runs the rest
    with open(raw) as f:
      rows = json.load(f)
    if any(r.get("overrides") != args.set for r in rows):
      parser.error(f"{raw} holds runs made with other --set overrides: pass another --out")
  for seed in map(int, args.seeds.split(",")):  # seed-major: a cut sweep has whole seeds
    for mixer in args.mixers.split(","):
      if any(r["mixer"] == mixer and r["seed"] == seed for r in rows):
        continue
      workdir = os.path.join(args.root, f"{mixer}_seed{seed}")
      rows.append(dict(run(args.task, mixer, seed, args.set, workdir), overrides=args.set))
      with open(out, "w") as f:  # written after every run: a cut sweep keeps its rows
        f.write(table(args.task, rows) + "\n")
      with open(raw, "w") as f:
        json.dump(rows, f, indent=2)
  print(table(args.task, rows))


if __name__ == "__main__":
  main()
