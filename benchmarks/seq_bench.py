"""Sequence models against the sequence length: training steps, memory and decoding.

The language model at width 256 (4 blocks, K = 3, 7, 15, 31, 16 channels per
involution group, 8 heads) with each of: involution, DynamicConv through our op,
DynamicConv by unfold (fairseq's T x K x D formulation: `method="patches"` in JAX,
and in PyTorch, `torch_lm.py`) and causal attention. Training step (loss,
gradients) at T = 512 ... 32k with B x T constant: time, memory (XLA's compiled
temporaries; PyTorch's peak resident growth), ratios to attention. Decoding: one
step's time at prompt lengths 128 ... 8k (attention's cache holds the prompt; the
convolutions keep K - 1 inputs). A variant that fails to compile or run (out of
memory) is recorded as such and its row stops.

    python benchmarks/seq_bench.py [--quick] [--no-torch] [--plot docs/seq_bench.png]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import optax
from common import (
  available_bytes,
  best_time_s,
  mib,
  peak_rss_growth,
  peak_rss_growth_in_child,
  print_table,
)

from involution_jax.models.sequence import SequenceModel

VARIANTS = {
  "involution": dict(mixer="involution"),
  "dynamic (our op)": dict(mixer="dynamic"),
  "dynamic (unfold)": dict(mixer="dynamic", method="patches"),
  "attention": dict(mixer="attention"),
}
TORCH = "dynamic (unfold, PyTorch)"


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


def _torch_step(width, depth, batch, length):
  from torch_lm import gradient_step

  return gradient_step(width, (3, 7, 15, 31)[:depth], 8, batch, length)


def _torch_memory_child(width, depth, batch, length) -> None:
  step = _torch_step(width, depth, batch, length)
  step()  # the parameters' gradients exist, as in the timed steps
  print(peak_rss_growth(step))


def _measure(name, variant, width, depth, batch, length, repeats) -> tuple[float, int]:
  """(seconds, bytes) of one training step: XLA's temporaries, or PyTorch's peak RSS growth."""
  if name == TORCH:
    step = _torch_step(width, depth, batch, length)
    seconds = best_time_s(step, repeats=repeats, min_seconds=0.0)
    sizes = ("--width", width, "--depth", depth, "--batch", batch, "--length", length)
    argv = [os.path.abspath(__file__), "--torch-memory-child", *map(str, sizes)]
    return seconds, peak_rss_growth_in_child(argv)[0]
  step, args = _train_step(_model(width, depth, length, **variant), batch, length)
  memory = step.lower(*args).compile().memory_analysis()
  needed = sum(getattr(memory, f"{kind}_size_in_bytes") for kind in ("temp", "argument", "output"))
  if needed > 0.9 * available_bytes():  # running it would wake the kernel's OOM killer
    raise MemoryError(f"needs {needed / 2**30:.1f} GiB, {available_bytes() / 2**30:.1f} free")
  return best_time_s(
    lambda: step(*args), repeats=repeats, min_seconds=0.0
  ), memory.temp_size_in_bytes


def training_runs(lengths, tokens, width, depth, repeats, variants) -> dict[str, list[dict]]:
  """Per variant, one entry per length: T, B and (seconds, bytes) or the error it stopped at."""
  runs = {name: [] for name in variants}
  for length in lengths:
    batch = max(tokens // length, 1)
    for name, variant in variants.items():
      if runs[name] and "error" in runs[name][-1]:
        continue
      try:
        seconds, memory = _measure(name, variant, width, depth, batch, length, repeats)
        runs[name].append(dict(length=length, batch=batch, seconds=seconds, bytes=memory))
      except Exception as e:  # out of memory, or a compile that cannot fit
        error = str(e).strip().splitlines()[0][:60] if str(e).strip() else type(e).__name__
        runs[name].append(dict(length=length, batch=batch, error=error))
  return runs


def training_rows(runs: dict[str, list[dict]]) -> list[list[str]]:
  attention = {r["length"]: r.get("seconds") for r in runs.get("attention", [])}
  rows = []
  for length in sorted({r["length"] for entries in runs.values() for r in entries}):
    for name, entries in runs.items():
      for r in (r for r in entries if r["length"] == length):
        cells = [f"{length}", f"{r['batch']}", name]
        if "error" in r:
          rows.append([*cells, f"failed: {r['error']}", "", ""])
          continue
        base = attention.get(length)
        ratio = f"{base / r['seconds']:.2f}x" if base else "-"
        rows.append([*cells, f"{r['seconds'] * 1e3:.1f}", f"{mib(r['bytes']):.0f}", ratio])
  return rows


def draw(runs: dict[str, list[dict]], decoding: list[list[str]], out: str) -> None:
  """Log-log: step time and memory against T per variant; decoding time against P."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import LogLocator, NullLocator, StrMethodFormatter

  figure = Figure(figsize=(13.5, 3.8), layout="constrained")
  time_ax, memory_ax, decode_ax = figure.subplots(1, 3)
  for name, entries in runs.items():
    done = [r for r in entries if "seconds" in r]
    lengths = [r["length"] for r in done]
    time_ax.plot(lengths, [r["seconds"] * 1e3 for r in done], "o-", label=name)
    memory_ax.plot(lengths, [mib(r["bytes"]) for r in done], "o-", label=name)
  for name in ("involution", "attention"):
    rows = [r for r in decoding if r[1] == name]
    decode_ax.plot([int(r[0]) for r in rows], [float(r[2]) for r in rows], "o-", label=name)
  for ax, title, unit in (
    (time_ax, "training step (B x T constant)", "ms"),
    (memory_ax, "training step memory", "MiB"),
    (decode_ax, "one decoding step after P tokens", "us / token"),
  ):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({int(x) for line in ax.get_lines() for x in line.get_xdata()})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("P" if ax is decode_ax else "T")
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
  figure.savefig(out, dpi=110)


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
  parser.add_argument("--no-torch", action="store_true", help="no PyTorch row")
  parser.add_argument("--plot", default=None, help="write the log-log picture to this PNG")
  parser.add_argument("--torch-memory-child", action="store_true", help=argparse.SUPPRESS)
  for size in ("width", "depth", "batch", "length"):
    parser.add_argument(f"--{size}", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.torch_memory_child:
    return _torch_memory_child(args.width, args.depth, args.batch, args.length)
  variants = dict(VARIANTS)
  if not args.no_torch:
    try:
      import torch  # noqa: F401

      variants[TORCH] = None
    except ImportError:
      print("torch not installed: no PyTorch row")
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
  runs = training_runs(lengths, tokens, width, depth, repeats, variants)
  print_table(["T", "B", "variant", "ms", "memory MiB", "vs attention"], training_rows(runs))
  print("memory: XLA's compiled temporaries (JAX); peak resident-set growth (PyTorch)")
  print("\none decoding step (batch 1), after a prompt of P tokens")
  decoding = decoding_rows(prompts, width, depth, 5)
  print_table(["P", "variant", "us / token", "cache KiB"], decoding)
  if args.plot:
    draw(runs, decoding, args.plot)
    print(f"\n{os.path.abspath(args.plot)}")


if __name__ == "__main__":
  main()
