"""Faster R-CNN and Mask R-CNN in digit scenes, conv/conv against inv/inv, one table.

For each `digitscenes_rcnn` variant: train it in its own workdir (a finished run's
metrics.json is reused), then tabulate parameters, multiply-adds of one 48 x 48
image's inference (XLA's cost analysis, post-processing included), validation box
AP and mask AP (pycocotools) and the training's wall time on this machine. Writes
the table as markdown and the rows as JSON, and prints the table.

    python experiments/digit_detectors.py
    python experiments/digit_detectors.py --variants faster_conv,faster_inv

Every figure in the README's digit-scene R-CNN table comes from the first command.
"""

from __future__ import annotations

import argparse
import json
import os

from involution_jax import configs
from involution_jax.models import create_model
from involution_jax.training.trainer import train_and_evaluate
from involution_jax.weights.summary import params_and_gmacs

VARIANTS = ("faster_conv", "faster_inv", "mask_conv", "mask_inv", "mask_inv_softmax")
NUM_CLASSES = 10  # the digits


def run(variant: str, workdir: str) -> dict:
  """Trains `digitscenes_rcnn:variant` in `workdir` (unless done); its row of the table."""
  config = configs.get_config(f"digitscenes_rcnn:{variant}")
  metrics = train_and_evaluate(config, workdir)  # a finished run: the metrics it wrote
  model = create_model(config.model, num_classes=NUM_CLASSES, **config.model_kwargs)
  params, gmacs = params_and_gmacs(model, config.image_size)
  return dict(
    variant=variant,
    params=params,
    gmacs=gmacs,
    box_ap=metrics["test_ap"],
    box_ap50=metrics["test_ap50"],
    mask_ap=metrics.get("test_mask_ap"),
    mask_ap50=metrics.get("test_mask_ap50"),
    train_loss=metrics["train_loss"],
    train_mask_loss=metrics.get("train_mask_loss"),
    wall_seconds=metrics["wall_time_s"],
    examples_per_second=metrics["examples_per_second"],
    steps=metrics["steps"],
  )


def table(rows: list[dict]) -> str:
  lines = [
    "| model | neck / head | params | MMACs / image | box AP | AP50 | mask AP | mask AP50 "
    "| final mask loss | train s |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    model, _, parts = r["variant"].partition("_")
    parts = {"conv": "conv / conv", "inv": "inv / inv", "inv_softmax": "inv / inv, softmax"}[parts]
    masked = r["mask_ap"] is not None
    mask = lambda key: f"{r[key]:.3f}" if masked else "-"
    lines.append(
      f"| {'Mask' if model == 'mask' else 'Faster'} R-CNN | {parts} | {r['params']:,} | "
      f"{r['gmacs'] * 1e3:.1f} | {r['box_ap']:.3f} | {r['box_ap50']:.3f} | {mask('mask_ap')} | "
      f"{mask('mask_ap50')} | {mask('train_mask_loss')} | {r['wall_seconds']:.0f} |"
    )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--root", default="runs/rcnn", help="the runs' workdirs go here")
  parser.add_argument("--out", default="experiments/results/digit_rcnn.md")
  args = parser.parse_args()
  rows = [run(v, os.path.join(args.root, v)) for v in args.variants.split(",")]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    f.write(table(rows) + "\n")
  with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
    json.dump(rows, f, indent=2)
  print(table(rows))


if __name__ == "__main__":
  main()
