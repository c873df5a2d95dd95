"""Does the 1-D op gain by reading x in place? `_by_rows` against one padded copy of x.

The 1-D passes in `ops/xla_nd.py` split the output rows into head, interior and
tail (`_by_rows`); the interior reads x itself. This benchmark times, in one
process, the forward (`aggregate`) and the kernel gradient with and without the
split, for several window sizes, causal, at dynamic-convolution scale (batch 8,
T = 4096, C = 512, 16 channels per group), with XLA's compiled temporaries. It
is the evidence for `aggregate_grad_kernel`'s rule of splitting only up to 8 taps.

    python benchmarks/rows_bench.py
    python benchmarks/rows_bench.py --windows 7,31 --length 1024
    python benchmarks/rows_bench.py --quick       # a smoke run at a small shape
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
from common import best_time_s, compiled_temp_bytes, mib, print_table

from involution_jax.ops import xla_nd
from involution_jax.ops.xla import grouped


def _passes(window: int, padding, acc):
  """{pass: (split, one padded copy)} as functions of (x, kernel, y grouped (B, T, G, Cg))."""
  stride, dilation = (1,), (1,)
  forward = partial(xla_nd._aggregate_padded, stride=stride, dilation=dilation, acc=acc)
  grad_kernel = partial(
    xla_nd._grad_kernel_padded, window=(window,), stride=stride, dilation=dilation, acc=acc
  )
  split = partial(
    xla_nd._by_rows, window0=window, stride=stride, dilation=dilation, padding=padding
  )
  return {
    "forward": (
      lambda x, k, y: split(forward, x, k),
      lambda x, k, y: forward(x, k, padding),
    ),
    "kernel gradient": (
      lambda x, k, y: split(grad_kernel, x, y),
      lambda x, k, y: grad_kernel(x, y, padding),
    ),
  }


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--windows", default="3,7,8,9,15,31", help="comma-separated window sizes")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=4096)
  parser.add_argument("--channels", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--quick", action="store_true", help="K = 3 and 31 at B=2, T=256, C=64")
  args = parser.parse_args(argv)
  if args.quick:
    args.windows, args.batch, args.length, args.channels = "3,31", 2, 256, 64
  windows = [int(k) for k in args.windows.split(",")]
  if any(k < 1 for k in windows):
    parser.error(f"--windows: every size must be >= 1, got {args.windows!r}")
  groups = args.channels // 16
  if groups < 1 or args.channels % 16:
    parser.error(f"--channels: a positive multiple of 16 (16 per group), got {args.channels}")

  print(f"device: {jax.devices()[0].platform}; B={args.batch} T={args.length} C={args.channels}")
  rng = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(rng[0], (args.batch, args.length, args.channels))
  y = grouped(jax.random.normal(rng[1], x.shape), groups)
  rows = []
  for window in windows:
    kernel = jax.random.normal(rng[2], (args.batch, args.length, groups, window))
    for name, (split, padded) in _passes(window, [(window - 1, 0)], x.dtype).items():
      cells = []
      for fn in (split, padded):
        jitted = jax.jit(fn)
        seconds = best_time_s(lambda: jitted(x, kernel, y), repeats=args.repeats)
        cells.append((seconds * 1e3, mib(compiled_temp_bytes(jitted, x, kernel, y))))
      (split_ms, split_mib), (padded_ms, padded_mib) = cells
      rows.append(
        [
          f"K={window}",
          name,
          f"{split_ms:.2f}",
          f"{padded_ms:.2f}",
          f"{padded_ms / split_ms:.2f}x",
          f"{split_mib:.1f} / {padded_mib:.1f}",
        ]
      )
  print_table(
    ["window", "pass", "split ms", "padded ms", "speed-up", "temp MiB split / padded"], rows
  )
  print("speed-up: padded time / split time (higher: the split helps). Causal padding.")


if __name__ == "__main__":
  main()
