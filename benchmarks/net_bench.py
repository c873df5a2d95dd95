"""Whole-network benchmark: RedNet-50 training step and inference, ours vs the official.

In one process: our Flax RedNet-50 (jit, shift involution), the official
formulation re-created in PyTorch (unfold involution, tests/torch_rednet.py),
and a Flax ResNet-50 of the same style for reference. Batch 8 at 224 x 224,
float32; a training step is forward + backward + SGD momentum update with
BatchNorm in train mode. Memory: XLA's compiled buffers (arguments + outputs not
donated + temporaries) for JAX, the peak resident-set growth during a step for PyTorch.

    python benchmarks/net_bench.py [--batch 8] [--size 224] [--repeats 10] [--stages 3,4,6,3]
        [--no-torch] [--bf16]
    python benchmarks/net_bench.py --quick  # one block per stage, batch 2 at 32 x 32: a smoke run
"""

from __future__ import annotations

import argparse
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from common import best_time_s, mib, peak_rss_growth, peak_rss_growth_in_child, print_table

from involution_jax import RedNet, tasks
from involution_jax.models.layers import BatchNorm, conv, max_pool
from involution_jax.ops import computed_once
from involution_jax.training import step as train_step


class _ResNetBlock(nn.Module):
  mid: int
  stride: int

  @nn.compact
  def __call__(self, x, train):
    out = nn.relu(BatchNorm()(conv(x, self.mid, 1), train))
    out = nn.relu(BatchNorm()(conv(out, self.mid, 3, self.stride), train))
    out = BatchNorm(scale_init=nn.initializers.zeros)(conv(out, self.mid * 4, 1), train)
    if self.stride != 1 or x.shape[-1] != self.mid * 4:
      x = BatchNorm()(conv(x, self.mid * 4, 1, self.stride), train)
    return computed_once(nn.relu(out + x))


class ResNet(nn.Module):
  """ResNet (v1.5; default: ResNet-50) in the same style as our RedNet: 1x1 convs as matmuls."""

  stage_sizes: tuple[int, ...] = (3, 4, 6, 3)

  @nn.compact
  def __call__(self, x, train):
    x = nn.relu(BatchNorm()(conv(x, 64, 7, 2), train))
    x = max_pool(x, 3, 2, 1)
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        x = _ResNetBlock(64 * 2**i, 2 if i > 0 and j == 0 else 1)(x, train)
    return nn.Dense(1000)(jnp.mean(x, axis=(1, 2)))


def _compiled_bytes(compiled) -> int:
  """Arguments + outputs not aliased to (donated) arguments + temporaries."""
  a = compiled.memory_analysis()
  return (
    a.argument_size_in_bytes + a.output_size_in_bytes - a.alias_size_in_bytes + a.temp_size_in_bytes
  )


def _jax_measure(model, batch_size, size, repeats):
  """(train step s, inference s, train MiB, inference MiB)."""
  tx = optax.sgd(1.0, momentum=0.9)  # the step multiplies by the learning rate, 0.1
  init = lambda: train_step.init_state(model, tx, jax.random.PRNGKey(0), (size, size, 3))
  state = jax.jit(init)()
  batch = dict(
    image=jax.random.normal(jax.random.PRNGKey(1), (batch_size, size, size, 3)),
    label=jnp.zeros(batch_size, jnp.int32),
    valid=jnp.ones(batch_size),
  )
  loss_fn = tasks.Classification().loss_fn(
    model, ml_collections.ConfigDict(dict(label_smoothing=0.1))
  )
  # The state is donated, as in training: its update is written in place.
  step = jax.jit(
    lambda s, b: train_step.train_step(s, b, 0.1, loss_fn=loss_fn, tx=tx),
    donate_argnums=0,
  )
  compiled = step.lower(state, batch).compile()
  train_bytes = _compiled_bytes(compiled)
  holder = [state]

  def train():
    holder[0], metrics = compiled(holder[0], batch)
    return metrics["loss"]

  t_train = best_time_s(train, repeats)
  variables = holder[0].variables()
  infer = (
    jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, batch["image"]).compile()
  )
  infer_bytes = _compiled_bytes(infer)
  t_infer = best_time_s(lambda: infer(variables, batch["image"]), repeats)  # compiled once
  return t_train, t_infer, mib(train_bytes), mib(infer_bytes)


def _torch_steps(batch_size, size, stages):
  """The official model's (train step, inference) closures; the optimiser state exists."""
  import torch
  from torch_rednet import Classifier

  model = Classifier(stages)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  x = torch.randn(batch_size, 3, size, size)
  y = torch.zeros(batch_size, dtype=torch.long)
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

  def train():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss

  def infer():
    model.eval()
    with torch.no_grad():
      return model(x)

  train()  # allocate the optimiser state outside the measurements
  return train, infer


def _torch_memory_child(batch_size, size, stages) -> None:
  train, infer = _torch_steps(batch_size, size, stages)
  print(peak_rss_growth(train), peak_rss_growth(infer))


def _torch_measure(batch_size, size, repeats, stages):
  """Times in this process; memory in a child (`common.peak_rss_growth_in_child`)."""
  train, infer = _torch_steps(batch_size, size, stages)
  t_train = best_time_s(train, repeats, warmup=0)
  t_infer = best_time_s(infer, repeats, warmup=0)
  argv = [os.path.abspath(__file__), "--torch-memory-child", "--batch", str(batch_size)]
  argv += ["--size", str(size), "--stages", ",".join(map(str, stages))]
  train_growth, infer_growth = peak_rss_growth_in_child(argv)
  return t_train, t_infer, mib(train_growth), mib(infer_growth)


def _stages(text: str) -> tuple[int, ...]:
  try:
    stages = tuple(int(v) for v in text.split(","))
  except ValueError:
    stages = ()
  if len(stages) != 4 or min(stages) < 1:
    raise argparse.ArgumentTypeError(f"expected 4 ints >= 1 like 3,4,6,3, got {text!r}")
  return stages


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=224, help="input height and width")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument(
    "--quick",
    action="store_true",
    help="one block per stage, batch 2 at 32 x 32, one repeat: a smoke run, not a measurement",
  )
  parser.add_argument(
    "--stages",
    type=_stages,
    default=(3, 4, 6, 3),
    help="blocks per stage of every model (default 3,4,6,3: RedNet-50 and ResNet-50)",
  )
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--no-resnet", action="store_true")
  parser.add_argument("--bf16", action="store_true", help="also our RedNet in bfloat16 compute")
  parser.add_argument("--torch-memory-child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.torch_memory_child:
    return _torch_memory_child(args.batch, args.size, args.stages)
  if args.quick:
    args.batch, args.size, args.repeats, args.stages = 2, 32, 1, (1, 1, 1, 1)
  depth = 2 + 3 * sum(args.stages)
  rednet, resnet = f"RedNet-{depth}", f"ResNet-{depth}"
  print(
    f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}); batch "
    f"{args.batch}, {args.size} x {args.size}, float32 unless noted"
  )
  shape = (args.batch, args.size, args.repeats)
  results = {f"{rednet} (ours, JAX)": _jax_measure(RedNet(stage_sizes=args.stages), *shape)}
  if args.bf16:
    model = RedNet(stage_sizes=args.stages, dtype=jnp.bfloat16)
    results[f"{rednet} (ours, JAX, bf16)"] = _jax_measure(model, *shape)
  if not args.no_torch:
    try:
      results[f"{rednet} (official, PyTorch)"] = _torch_measure(*shape, args.stages)
    except ImportError:
      print("torch not installed: no PyTorch baseline")
  if not args.no_resnet:
    results[f"{resnet} (JAX, same style)"] = _jax_measure(ResNet(args.stages), *shape)
  base = results.get(f"{rednet} (official, PyTorch)")
  rows = []
  for name, (t_train, t_infer, m_train, m_infer) in results.items():
    rows.append(
      [
        name,
        f"{t_train:.2f}",
        f"{base[0] / t_train:.1f}x" if base else "-",
        f"{args.batch / t_train:.1f}",
        f"{t_infer:.3f}",
        f"{base[1] / t_infer:.1f}x" if base else "-",
        f"{m_train:.0f}",
        f"{m_infer:.0f}",
      ]
    )
  print_table(
    [
      "model",
      "train step s",
      "vs torch",
      "train img/s",
      "inference s",
      "vs torch",
      "train MiB",
      "inference MiB",
    ],
    rows,
  )
  print(
    "memory: JAX = compiled arguments (parameters, optimiser state, batch) + outputs not "
    "donated + temporaries; PyTorch = peak RSS growth during the step with freed memory "
    "returned to the system (parameters and optimiser state not included)."
  )


if __name__ == "__main__":
  main()
