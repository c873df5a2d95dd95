"""Sequence models against the sequence length: training steps, memory and decoding.

The language model at width 256 (4 blocks, K = 3, 7, 15, 31, 16 channels per
involution group, 8 heads) with each of: involution, DynamicConv through our op,
DynamicConv by unfold (fairseq's T x K x D formulation, `method="patches"`) and
causal attention. Training step (loss, gradients) at T = 512 ... 32k with B x T
constant: time, XLA's compiled temporaries, ratios to attention. Decoding: one
step's time at prompt lengths 128 ... 8k (attention's cache holds the prompt; the
convolutions keep K - 1 inputs). A variant that fails to compile or run (out of
memory) is recorded as such and its row stops.

    python benchmarks/seq_bench.py [--quick]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from common import best_time_s, compiled_temp_bytes, mib, print_table

from involution_jax.models.sequence import SequenceModel

VARIANTS = {
  "involution": dict(mixer="involution"),
  "dynamic (our op)": dict(mixer="dynamic"),
  "dynamic (unfold)": dict(mixer="dynamic", method="patches"),
  "attention": dict(mixer="attention"),
}


def _model(width: int, depth: int, max_length: int, **variant) -> SequenceModel:
  sizes = (3, 7, 15, 31)[:depth]
  return SequenceModel(
    width=width, depth=depth, kernel_sizes=sizes, dropout=0.0, max_length=max_length, **variant
  )


def _train_step(model, batch, length):
  tokens = jnp.zeros((batch, length), jnp.int32)
  params = jax.jit(model.init, static_argnames="train")(jax.random.PRNGKey(0), tokens, train=False)

  def loss(params, tokens):
    logits = model.apply(params, tokens, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()

  step = jax.jit(jax.grad(loss))
  return step, (params, tokens)


def training_rows(lengths, tokens, width, depth, repeats) -> list[list[str]]:
  rows, stopped = [], set()
  for length in lengths:
    batch = max(tokens // length, 1)
    times = {}
    for name, variant in VARIANTS.items():
      if name in stopped:
        continue
      try:
        step, args = _train_step(_model(width, depth, length, **variant), batch, length)
        temp = compiled_temp_bytes(step, *args)
        seconds = best_time_s(lambda: step(*args), repeats=repeats, min_seconds=0.0)
      except Exception as e:  # out of memory, or a compile that cannot fit
        stopped.add(name)
        rows.append([f"{length}", f"{batch}", name, f"failed: {str(e).splitlines()[0][:60]}"])
        continue
      times[name] = seconds
      rows.append([f"{length}", f"{batch}", name, f"{seconds * 1e3:.1f}", f"{mib(temp):.0f}"])
    for row in rows[-len(VARIANTS) :]:
      base = times.get("attention")
      if len(row) == 5 and base:
        row.append(f"{base / times[row[2]]:.2f}x")
  return rows


def decoding_rows(prompts, width, depth, repeats) -> list[list[str]]:
  rows = []
  for prompt in prompts:
    for name in ("involution", "attention"):
      decoder = _model(width, depth, prompt + 1, **VARIANTS[name]).clone(decode=True)
      token = jnp.zeros((1, 1), jnp.int32)
      variables = decoder.init(jax.random.PRNGKey(0), token, train=False)
      params, cache = {"params": variables["params"]}, variables["cache"]
      step = jax.jit(
        lambda cache, token: decoder.apply(
          {**params, "cache": cache}, token, train=False, mutable=["cache"]
        )
      )
      seconds = best_time_s(lambda: step(cache, token), repeats=repeats)
      cache_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(cache))
      rows.append([f"{prompt}", name, f"{seconds * 1e6:.0f}", f"{cache_bytes / 2**10:.0f}"])
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
  args = parser.parse_args()
  if args.quick:
    lengths, tokens, width, depth, prompts, repeats = (64, 256), 512, 32, 2, (16, 64), 2
  else:
    lengths, tokens, width, depth = (512, 2048, 8192, 32768), 32768, 256, 4
    prompts, repeats = (128, 512, 2048, 8192), 3
  platform = jax.devices()[0].platform
  print(
    f"training step (loss and gradients), width {width}, {depth} blocks, B x T = {tokens}, "
    f"{platform}"
  )
  print_table(
    ["T", "B", "variant", "ms", "temp MiB", "vs attention"],
    training_rows(lengths, tokens, width, depth, repeats),
  )
  print("\none decoding step (batch 1), after a prompt of P tokens")
  print_table(["P", "variant", "us / token", "cache KiB"], decoding_rows(prompts, width, depth, 5))


if __name__ == "__main__":
  main()
