"""How the mask head's activations grow at initialisation, conv against involution.

Builds `digitscenes_rcnn:VARIANT` at its initial weights, runs one training
forward pass (BatchNorm on batch statistics, as in training) on the first batch
of digit scenes and prints the standard deviation of each of the four mask-head
layers' outputs (before their ReLU) and of the mask logits, and the initial mask loss.

    python experiments/mask_head_scale.py mask_conv mask_inv mask_inv_softmax
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
from flax import traverse_util

from involution_jax import configs, tasks
from involution_jax.data import pipeline
from involution_jax.training import step as train_step


def layer_scales(variant: str) -> tuple[dict, dict]:
  """({layer: std of its output} in the mask head, {loss term: value}) at initialisation."""
  config = configs.get_config(f"digitscenes_rcnn:{variant}")
  task = tasks.get_task(config)
  dataset = task.dataset(config, "train")
  model = train_step.model_from_config(config, dataset.num_classes)
  batch = next(
    pipeline.train_iterator(
      dataset, task.preprocess(config), global_batch=config.batch_size, seed=config.seed
    )
  )
  targets = dict(boxes=batch["boxes"], classes=batch["classes"], masks=batch["instance_masks"])
  rngs = {"params": jax.random.PRNGKey(config.seed), "sample": jax.random.PRNGKey(1)}
  variables = model.init(rngs, batch["image"], False)
  losses, state = model.apply(
    variables,
    batch["image"],
    True,
    targets,
    rngs={"sample": jax.random.PRNGKey(2)},
    capture_intermediates=lambda module, _: module.name is not None,
    mutable=["intermediates", "batch_stats"],
  )
  flat = traverse_util.flatten_dict(state["intermediates"]["mask_head"])
  wanted = [f"convs_{i}" for i in range(4)] + ["conv_logits"]
  scales = {
    path[0]: float(jnp.std(value[0]))
    for path, value in flat.items()
    if path[0] in wanted and path[1:] == ("__call__",)
  }
  return scales, {k: float(v) for k, v in losses.items() if k.endswith("loss")}


def main() -> None:
  for variant in sys.argv[1:] or ["mask_conv", "mask_inv", "mask_inv_softmax"]:
    scales, losses = layer_scales(variant)
    shown = ", ".join(f"{k} {v:.3g}" for k, v in scales.items())
    print(f"{variant}: output std {shown}; mask_loss {losses['mask_loss']:.3g}")


if __name__ == "__main__":
  main()
