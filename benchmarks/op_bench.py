"""Involution op benchmark: our formulations vs unfold formulations in PyTorch, 1-D to 3-D.

2-D: RedNet-50's stage shapes (batch 8, 224 input, K=7, 16 channels per group)
plus one stride-2 case, against the official unfold. 1-D: dynamic-convolution
scale (batch 8, T=4096, C=512, causal, K=31 and 7), against fairseq-style
`Tensor.unfold` over time. 3-D: video / volume shapes (K=3), against an unfold
over three axes. Forward and forward+backward (gradients w.r.t. x and the
kernel), per method: "auto" (in 1-D on the CPU: `ops/native.py`'s C++ loops;
elsewhere the same as "shift", so not run twice), "shift" (XLA's loops) and
"patches" (the reference); time, ratio to PyTorch (when torch is installed), XLA's compiled
temporary memory beside the unfold tensor, and the bandwidth floor (bytes that
must move at this machine's measured copy bandwidth). Everything in one process.

    python benchmarks/op_bench.py                 # every table
    python benchmarks/op_bench.py --dims 1,3      # the 1-D and 3-D tables
    python benchmarks/op_bench.py --quick         # one small shape per table
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from common import (
  best_time_s,
  compiled_temp_bytes,
  copy_bandwidth_bytes_per_s,
  mib,  # also puts tests/ (the PyTorch re-creation) on the path
  print_table,
)

from involution_jax import involution
from involution_jax.ops import output_size

# (x shape, window, stride, padding), 16 channels per group.
SHAPES = {
  2: [
    ((8, s, s, c), (7, 7), st, "SAME")
    for c, s, st in [(64, 56, 1), (128, 28, 1), (256, 14, 1), (512, 7, 1), (128, 56, 2)]
  ],
  1: [((8, 4096, 512), (31,), 1, "CAUSAL"), ((8, 4096, 512), (7,), 1, "CAUSAL")],
  3: [((2, 16, 28, 28, 64), (3, 3, 3), 1, "SAME"), ((2, 8, 56, 56, 32), (3, 3, 3), 1, "SAME")],
}
QUICK = {  # patches' 2-D backward takes seconds at (8, 28, 28, 64)
  2: [((2, 14, 14, 32), (7, 7), 1, "SAME")],
  1: [((2, 512, 64), (7,), 1, "CAUSAL")],
  3: [((1, 8, 14, 14, 32), (3, 3, 3), 1, "SAME")],
}
BASELINES = {2: "torch unfold", 1: "torch unfold1d", 3: "torch unfold3d"}


def _jax_fns(method: str, options: dict):
  """fwd(x, kernel) and fwd_bwd(x, kernel, cotangent) -> (dx, dkernel), jitted.

  The cotangent is an argument, as in a network: closed over, XLA would fold it
  into the executable's constants (and out of the temporaries measured).
  """
  fwd = jax.jit(lambda x, k: involution(x, k, method=method, **options))
  loss = lambda x, k, y: jnp.vdot(involution(x, k, method=method, **options), y)
  return fwd, jax.jit(jax.grad(loss, argnums=(0, 1)))


def _torch_unfold(x, kernel, window, stride, padding):
  """The unfold formulation in PyTorch, channels first: x (B, C, *S), kernel (B, G, *O, *W)
  (2-D: the official (B, G, K*K, Ho, Wo))."""
  import torch.nn.functional as F
  from torch_rednet import involution_unfold

  n = x.dim() - 2
  b, c = x.shape[:2]
  groups = kernel.shape[1]
  if n == 2:  # the official aggregation
    k = window[0]
    return involution_unfold(x, kernel, k, stride)
  lows = [(k - 1) if padding == "CAUSAL" else (k - 1) // 2 for k in window]
  highs = [0 if padding == "CAUSAL" else (k - 1) // 2 for k in window]
  pads = [p for lo, hi in zip(reversed(lows), reversed(highs)) for p in (lo, hi)]
  patches = F.pad(x, pads)
  for axis, k in enumerate(window):  # views: (B, C, *O, *W)
    patches = patches.unfold(2 + axis, k, stride)
  out_shape = patches.shape[2 : 2 + n]
  patches = patches.reshape(b, groups, c // groups, *out_shape, *window)
  product = patches * kernel.unsqueeze(2)
  return product.sum(dim=tuple(range(-n, 0))).reshape(b, c, *out_shape)


def _torch_times(x, kernel, cotangent, window, stride, padding, repeats):
  import torch

  n = x.ndim - 2
  to_channels_first = lambda a: torch.from_numpy(np.array(a)).movedim(-1, 1).contiguous()
  xt = to_channels_first(x).requires_grad_()
  kt = torch.from_numpy(np.array(kernel)).movedim(n + 1, 1)  # (B, G, *O, *W)
  if n == 2:  # the official layout, (B, G, K*K, Ho, Wo)
    kt = kt.flatten(-2).permute(0, 1, 4, 2, 3)
  kt = kt.contiguous().requires_grad_()
  yt = to_channels_first(cotangent)

  def forward():
    with torch.no_grad():
      return _torch_unfold(xt, kt, window, stride, padding)

  def forward_backward():
    xt.grad = kt.grad = None
    _torch_unfold(xt, kt, window, stride, padding).backward(yt)
    return xt.grad

  return best_time_s(forward, repeats), best_time_s(forward_backward, repeats)


def _rows(x_shape, window, stride, padding, methods, bandwidth, have_torch, repeats):
  n = len(x_shape) - 2
  out = tuple(output_size(s, stride) for s in x_shape[1:-1])
  groups = x_shape[-1] // 16
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], x_shape)
  kernel = jax.random.normal(keys[1], (x_shape[0], *out, groups, *window))
  cotangent = jax.random.normal(keys[2], (x_shape[0], *out, x_shape[-1]))
  options = dict(stride=stride, padding=padding)
  bytes_fwd = 4 * (x.size + kernel.size + cotangent.size)
  # Backward reads y, x, kernel and writes dx, dkernel.
  bytes_fwd_bwd = bytes_fwd + 4 * (cotangent.size + 2 * x.size + 2 * kernel.size)
  floor_fwd, floor_fwd_bwd = bytes_fwd / bandwidth, bytes_fwd_bwd / bandwidth
  unfold = mib(4 * cotangent.size * int(np.prod(window)))
  torch_fwd = torch_fwd_bwd = None
  if have_torch:
    torch_fwd, torch_fwd_bwd = _torch_times(x, kernel, cotangent, window, stride, padding, repeats)
  size = "x".join(map(str, x_shape[1:-1]))
  shape = f"{x_shape[-1]}@{size}/{stride} K={'x'.join(map(str, window))}"
  if n == 1:
    shape += f" {padding.lower()}"
  rows = []
  if n != 1 and "shift" in methods:  # "auto" runs "shift" there
    methods = [m for m in methods if m != "auto"]
  for method in methods:
    fwd, fwd_bwd = _jax_fns(method, options)
    t_fwd = best_time_s(lambda: fwd(x, kernel), repeats)
    t_fwd_bwd = best_time_s(lambda: fwd_bwd(x, kernel, cotangent), repeats)
    temp_fwd = mib(compiled_temp_bytes(fwd, x, kernel))
    temp_fwd_bwd = mib(compiled_temp_bytes(fwd_bwd, x, kernel, cotangent))
    rows.append(
      [
        shape,
        method,
        f"{t_fwd * 1e3:.1f}",
        f"{t_fwd / floor_fwd:.1f}",
        f"{torch_fwd / t_fwd:.1f}" if torch_fwd else "-",
        f"{t_fwd_bwd * 1e3:.1f}",
        f"{t_fwd_bwd / floor_fwd_bwd:.1f}",
        f"{torch_fwd_bwd / t_fwd_bwd:.1f}" if torch_fwd_bwd else "-",
        f"{temp_fwd:.1f}",
        f"{temp_fwd_bwd:.1f} ({100 * temp_fwd_bwd / unfold:.0f}%)",
        f"{unfold:.0f}",
      ]
    )
  if have_torch:
    rows.append(
      [
        shape,
        BASELINES[n],
        f"{torch_fwd * 1e3:.1f}",
        f"{torch_fwd / floor_fwd:.1f}",
        "1.0",
        f"{torch_fwd_bwd * 1e3:.1f}",
        f"{torch_fwd_bwd / floor_fwd_bwd:.1f}",
        "1.0",
        f"~{2 * unfold:.0f}",
        f"~{2 * unfold:.0f}",
        f"{unfold:.0f}",
      ]
    )
  return rows


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--quick", action="store_true", help="one small shape per table, one repeat (a smoke run)"
  )
  parser.add_argument("--dims", default="2,1,3", help="which tables: spatial dimensions")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--methods", default="auto,shift,patches")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
  args = parser.parse_args(argv)
  if args.quick:
    args.repeats = 1
  try:
    import torch  # noqa: F401

    have_torch = not args.no_torch
  except ImportError:
    have_torch = False
  bandwidth = copy_bandwidth_bytes_per_s()
  print(
    f"device: {jax.devices()[0].device_kind}, {jax.device_count()} device(s); measured copy "
    f"bandwidth {bandwidth / 1e9:.1f} GB/s; 16 channels per group, float32"
  )
  header = [
    "C@size/s K",
    "method",
    "fwd ms",
    "/floor",
    "x torch",
    "fwd+bwd ms",
    "/floor",
    "x torch",
    "temp fwd MiB",
    "temp f+b MiB (% unfold)",
    "unfold MiB",
  ]
  methods = args.methods.split(",")
  dims = [int(d) for d in args.dims.split(",")]
  if "pallas" in methods and dims != [2]:
    raise SystemExit("--methods pallas: the Pallas kernels are 2-D only; use --dims 2")
  for n in dims:
    rows = []
    for x_shape, window, stride, padding in (QUICK if args.quick else SHAPES)[n]:
      rows += _rows(x_shape, window, stride, padding, methods, bandwidth, have_torch, args.repeats)
    print(f"\n{n}-D")
    print_table(header, rows)
  print(
    "\nx torch: PyTorch unfold time / ours (higher is better). /floor: time / (bytes moved / "
    "bandwidth). torch temp: unfold tensor + product, analytic."
  )


if __name__ == "__main__":
  main()
