"""Sequence models against the sequence length: training steps, memory and decoding.

The language model at width 256 (4 blocks, K = 3, 7, 15, 31, 16 channels per
involution group, 8 heads) with each of: involution, DynamicConv through our op,
DynamicConv by unfold (fairseq's T x K x D formulation: `method="patches"` in JAX,
and in PyTorch, `torch_lm.py`) and causal attention. Training step (loss,
gradients) at T = 512 ... 32k with B x T constant: time, memory (XLA's compiled
temporaries; PyTorch's peak resident growth), ratios to attention; the same for the
mixer alone at K = 31 (B x T = 8192, so that attention fits up to 8k). Decoding: one
step's time at prompt lengths 128 ... 8k (attention's cache holds the prompt; the
convolutions keep K - 1 inputs). A JAX step whose compiled memory exceeds what the
machine has free is compiled but not run ("out of memory (needs N GiB)"), at every
length, so its memory is still known; a variant that fails otherwise records the
error and its row stops.

    python benchmarks/seq_bench.py [--quick] [--parts model,mixer,decode] [--no-torch]
        [--plot docs/seq_bench.png]
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

from involution_jax.models.mixers import make_mixer
from involution_jax.models.sequence import SequenceModel

VARIANTS = {
  "involution": dict(mixer="involution"),
  "dynamic (our op)": dict(mixer="dynamic"),
  "dynamic (unfold)": dict(mixer="dynamic", method="patches"),
  "attention": dict(mixer="attention"),
}
TORCH = "dynamic (unfold, PyTorch)"
KERNEL_SIZES = (3, 7, 15, 31)
HEADS = 8


def _model(width: int, depth: int, max_length: int, **variant) -> SequenceModel:
  return SequenceModel(
    width=width,
    depth=depth,
    kernel_sizes=KERNEL_SIZES[:depth],
    heads=HEADS,
    dropout=0.0,
    max_length=max_length,
    **variant,
  )


def _jax_step(part, variant, width, depth, batch, length):
  """The jitted gradient step and its arguments: the LM's loss ("model"), or the mixer
  alone at the last block's K against a cotangent ("mixer")."""
  key = jax.random.PRNGKey(0)
  if part == "model":
    model = _model(width, depth, length, **variant)
    tokens = jnp.zeros((batch, length), jnp.int32)
    params = jax.jit(model.init, static_argnames="train")(key, tokens, train=False)

    def loss(params, tokens):
      logits = model.apply(params, tokens, train=False)
      return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()

    return jax.jit(jax.grad(loss)), (params, tokens)
  mixer = make_mixer(
    variant["mixer"],
    kernel_size=KERNEL_SIZES[depth - 1],
    heads=HEADS,
    group_channels=16,
    reduction_ratio=4,
    kernel_normalization=None,
    dropconnect=0.0,
    rope=True,
    max_length=length,
    decode=False,
    dtype=None,
    module_name="mixer",
    method=variant.get("method", "auto"),
  )
  x = jax.random.normal(key, (batch, length, width))
  params = jax.jit(mixer.init, static_argnames="train")(key, x, train=False)
  loss = lambda params, x, cotangent: jnp.vdot(mixer.apply(params, x, train=False), cotangent)
  return jax.jit(jax.grad(loss, argnums=(0, 1))), (params, x, x[:, ::-1])


def _torch_step(part, width, depth, batch, length):
  from torch_lm import gradient_step, mixer_gradient_step

  if part == "model":
    return gradient_step(width, KERNEL_SIZES[:depth], HEADS, batch, length)
  return mixer_gradient_step(width, KERNEL_SIZES[depth - 1], HEADS, batch, length)


def _torch_memory_child(part, width, depth, batch, length) -> None:
  step = _torch_step(part, width, depth, batch, length)
  step()  # the parameters' gradients exist, as in the timed steps
  print(peak_rss_growth(step))


def _measure(part, name, width, depth, batch, length, repeats) -> dict:
  """One training step: `seconds` where it ran, and `bytes`: XLA's temporaries (also
  where it would not fit, with `needs`: all its compiled memory), or PyTorch's peak
  resident growth."""
  if name == TORCH:
    step = _torch_step(part, width, depth, batch, length)
    seconds = best_time_s(step, repeats=repeats, min_seconds=0.0)
    sizes = ("--width", width, "--depth", depth, "--batch", batch, "--length", length)
    argv = [os.path.abspath(__file__), "--torch-memory-child", part, *map(str, sizes)]
    return dict(seconds=seconds, bytes=peak_rss_growth_in_child(argv)[0])
  step, args = _jax_step(part, VARIANTS[name], width, depth, batch, length)
  compiled = step.lower(*args).compile()  # measured and run: compiled once
  memory = compiled.memory_analysis()
  needed = sum(getattr(memory, f"{kind}_size_in_bytes") for kind in ("temp", "argument", "output"))
  if needed > 0.9 * available_bytes():  # running it would wake the kernel's OOM killer
    return dict(bytes=memory.temp_size_in_bytes, needs=needed)
  seconds = best_time_s(lambda: compiled(*args), repeats=repeats, min_seconds=0.0)
  return dict(seconds=seconds, bytes=memory.temp_size_in_bytes)


def training_runs(part, lengths, tokens, width, depth, repeats, names) -> dict[str, list[dict]]:
  """Per variant, one entry per length (T, B and `_measure`'s), B = max(tokens // T, 1).
  A variant that does not fit is still compiled at longer lengths (its memory); one
  that fails otherwise records the error and stops."""
  runs = {name: [] for name in names}
  for length in lengths:
    batch = max(tokens // length, 1)
    for name in names:
      if runs[name] and "error" in runs[name][-1]:
        continue
      try:
        result = _measure(part, name, width, depth, batch, length, repeats)
      except Exception as e:  # a compile or run that fails
        result = dict(error=(str(e).strip().splitlines() or [type(e).__name__])[0][:60])
      runs[name].append(dict(result, length=length, batch=batch))
  return runs


def training_rows(runs: dict[str, list[dict]]) -> list[list[str]]:
  attention = {r["length"]: r for r in runs.get("attention", [])}
  rows = []
  for length in sorted({r["length"] for entries in runs.values() for r in entries}):
    for name, entries in runs.items():
      for r in (r for r in entries if r["length"] == length):
        cells = [f"{length}", f"{r['batch']}", name]
        if "error" in r:
          rows.append([*cells, f"failed: {r['error']}", "", "", ""])
          continue
        base = attention.get(length, {})
        if "seconds" in r:
          time = f"{r['seconds'] * 1e3:.1f}"
        else:
          time = f"out of memory (needs {r['needs'] / 2**30:.1f} GiB)"
        speed = (
          f"{base['seconds'] / r['seconds']:.1f}x" if "seconds" in base and "seconds" in r else "-"
        )
        share = f"{r['bytes'] / base['bytes']:.1%}" if "bytes" in base and name != TORCH else "-"
        memory = mib(r["bytes"])
        rows.append(
          [*cells, time, f"{memory:.0f}" if memory >= 10 else f"{memory:.2f}", speed, share]
        )
  return rows


def draw(runs: dict[str, dict], decoding: list[list[str]], out: str) -> None:
  """Log-log, per part: step time and memory against T per variant; decoding against P."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import LogLocator, NullLocator, StrMethodFormatter

  figure = Figure(figsize=(13.5, 3.8 * max(len(runs), 1)), layout="constrained")
  axes = figure.subplots(max(len(runs), 1), 3, squeeze=False)
  panels = []
  for (part, part_runs), (time_ax, memory_ax, _) in zip(runs.items(), axes):
    for name, entries in part_runs.items():
      ran = [r for r in entries if "seconds" in r]
      (line,) = time_ax.plot([r["length"] for r in ran], [r["seconds"] * 1e3 for r in ran], "o-")
      compiled = [r for r in entries if "bytes" in r]
      memory_ax.plot(
        [r["length"] for r in compiled],
        [mib(r["bytes"]) for r in compiled],
        "o-",
        color=line.get_color(),
        label=name,
      )
    title = "LM" if part == "model" else "mixer alone"
    panels += [
      (time_ax, f"{title}: training step", "ms", "T"),
      (memory_ax, f"{title}: memory", "MiB", "T"),
    ]
  decode_ax = axes[0][2]
  for name in ("involution", "attention"):
    rows = [r for r in decoding if r[1] == name]
    decode_ax.plot([int(r[0]) for r in rows], [float(r[2]) for r in rows], "o-", label=name)
  if decoding:
    panels.append((decode_ax, "one decoding step after P tokens", "us / token", "P"))
  for row in axes[1:]:
    row[2].set_visible(False)
  for ax, title, unit, xlabel in panels:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({int(x) for line in ax.get_lines() for x in line.get_xdata()})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    if unit != "ms":
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


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="one tiny size per table (a smoke run)")
  parser.add_argument("--parts", default="model,mixer,decode", help="which tables, in order")
  parser.add_argument("--no-torch", action="store_true", help="no PyTorch rows")
  parser.add_argument("--plot", default=None, help="write the log-log picture to this PNG")
  parser.add_argument("--torch-memory-child", default=None, help=argparse.SUPPRESS)
  for size in ("width", "depth", "batch", "length"):
    parser.add_argument(f"--{size}", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.torch_memory_child:
    return _torch_memory_child(
      args.torch_memory_child, args.width, args.depth, args.batch, args.length
    )
  parts = args.parts.split(",")
  if not parts or set(parts) - {"model", "mixer", "decode"}:
    parser.error(f"--parts: some of model, mixer, decode, got {args.parts!r}")
  names = list(VARIANTS)
  if not args.no_torch:
    try:
      import torch  # noqa: F401

      names.append(TORCH)
    except ImportError:
      print("torch not installed: no PyTorch rows")
  if args.quick:
    lengths, width, depth, prompts, repeats = (64,), 32, 2, (16,), 1
    tokens = dict(model=128, mixer=64)
  else:
    lengths, width, depth = (512, 2048, 8192, 32768), 256, 4
    prompts, repeats = (128, 512, 2048, 8192), 3
    tokens = dict(model=32768, mixer=8192)  # the mixer alone: attention fits up to 8k
  platform = jax.devices()[0].platform
  runs = {}
  for part in (p for p in parts if p != "decode"):
    what = (
      f"the LM, {depth} blocks (K = {KERNEL_SIZES[:depth]})"
      if part == "model"
      else f"the mixer alone, K = {KERNEL_SIZES[depth - 1]}"
    )
    print(
      f"\ntraining step (gradients) of {what}, width {width}, B = max({tokens[part]} // T, 1), "
      f"{platform}"
    )
    # the LM's steps take seconds here: two timed runs after the warm-up suffice
    times = min(repeats, 2) if part == "model" else repeats
    runs[part] = training_runs(part, lengths, tokens[part], width, depth, times, names)
    print_table(
      ["T", "B", "variant", "ms", "memory MiB", "vs attention", "memory / attention's"],
      training_rows(runs[part]),
    )
  if runs:
    print("memory: XLA's compiled temporaries (JAX); peak resident-set growth (PyTorch)")
  decoding = []
  if "decode" in parts:
    print("\none decoding step (batch 1), after a prompt of P tokens")
    decoding = decoding_rows(prompts, width, depth, 5)
    print_table(["P", "variant", "us / token", "cache KiB"], decoding)
  if args.plot:
    draw(runs, decoding, args.plot)
    print(f"\n{os.path.abspath(args.plot)}")


if __name__ == "__main__":
  main()
