"""Involution op benchmark: our formulations vs the official unfold (PyTorch).

RedNet-50's stage shapes (batch 8, 224 input, K=7, 16 channels per group) plus
one stride-2 case; forward and forward+backward (gradients w.r.t. x and the
kernel); time, ratio to the PyTorch unfold baseline (when torch is installed),
XLA's compiled temporary memory, and the bandwidth floor (bytes that must move
at this machine's measured copy bandwidth). Everything in one process.

    python benchmarks/op_bench.py            # full table
    python benchmarks/op_bench.py --quick    # one small shape
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
from involution_jax.ops import output_size, patch_tensor_bytes

# (channels, input size, stride): RedNet-50's involutions at 224 x 224.
STAGE_SHAPES = [(64, 56, 1), (128, 28, 1), (256, 14, 1), (512, 7, 1), (128, 56, 2)]
QUICK_SHAPES = [(64, 28, 1)]


def _jax_fns(method: str, stride: int):
  """fwd(x, kernel) and fwd_bwd(x, kernel, cotangent) -> (dx, dkernel), jitted.

  The cotangent is an argument, as in a network: closed over, XLA would fold it
  into the executable's constants (and out of the temporaries measured).
  """
  fwd = jax.jit(lambda x, k: involution(x, k, stride=stride, method=method))
  loss = lambda x, k, y: jnp.vdot(involution(x, k, stride=stride, method=method), y)
  fwd_bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return fwd, fwd_bwd


def _torch_times(x, kernel, stride, cotangent, repeats):
  import torch
  from torch_rednet import involution_unfold

  b, h, w, c = x.shape
  _, ho, wo, g, k, _ = kernel.shape
  xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous().requires_grad_()
  kt = (
    torch.from_numpy(np.array(kernel))
    .permute(0, 3, 4, 5, 1, 2)
    .reshape(b, g, k * k, ho, wo)
    .contiguous()
    .requires_grad_()
  )
  yt = torch.from_numpy(np.array(cotangent)).permute(0, 3, 1, 2).contiguous()

  def forward():
    with torch.no_grad():
      return involution_unfold(xt, kt, k, stride)

  def forward_backward():
    xt.grad = kt.grad = None
    involution_unfold(xt, kt, k, stride).backward(yt)
    return xt.grad

  return best_time_s(forward, repeats), best_time_s(forward_backward, repeats)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="one small shape (a smoke run)")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--methods", default="shift,patches")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
  args = parser.parse_args()
  try:
    import torch  # noqa: F401

    have_torch = not args.no_torch
  except ImportError:
    have_torch = False
  bandwidth = copy_bandwidth_bytes_per_s()
  print(
    f"device: {jax.devices()[0].device_kind}, {jax.device_count()} device(s); "
    f"measured copy bandwidth {bandwidth / 1e9:.1f} GB/s; batch {args.batch}, K=7, "
    "16 channels per group, float32"
  )
  header = [
    "C@HxW/s",
    "method",
    "fwd ms",
    "floor",
    "x torch",
    "fwd+bwd ms",
    "floor",
    "x torch",
    "temp fwd MiB",
    "temp f+b MiB",
    "unfold MiB",
  ]
  rows = []
  for channels, size, stride in QUICK_SHAPES if args.quick else STAGE_SHAPES:
    k, groups, b = 7, channels // 16, args.batch
    out = output_size(size, stride)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (b, size, size, channels))
    kernel = jax.random.normal(keys[1], (b, out, out, groups, k, k))
    cotangent = jax.random.normal(keys[2], (b, out, out, channels))
    bytes_fwd = 4 * (x.size + kernel.size + cotangent.size)
    # Backward reads y, x, kernel and writes dx, dkernel.
    bytes_fwd_bwd = bytes_fwd + 4 * (cotangent.size + 2 * x.size + 2 * kernel.size)
    floor_fwd, floor_fwd_bwd = bytes_fwd / bandwidth, bytes_fwd_bwd / bandwidth
    torch_fwd = torch_fwd_bwd = None
    if have_torch:
      torch_fwd, torch_fwd_bwd = _torch_times(x, kernel, stride, cotangent, args.repeats)
    shape = f"{channels}@{size}x{size}/{stride}"
    unfold = mib(patch_tensor_bytes(x.shape, k, stride))
    for method in args.methods.split(","):
      fwd, fwd_bwd = _jax_fns(method, stride)
      t_fwd = best_time_s(lambda: fwd(x, kernel), args.repeats)
      t_fwd_bwd = best_time_s(lambda: fwd_bwd(x, kernel, cotangent), args.repeats)
      rows.append(
        [
          shape,
          method,
          f"{t_fwd * 1e3:.1f}",
          f"{floor_fwd * 1e3:.2f}",
          f"{torch_fwd / t_fwd:.1f}" if torch_fwd else "-",
          f"{t_fwd_bwd * 1e3:.1f}",
          f"{floor_fwd_bwd * 1e3:.2f}",
          f"{torch_fwd_bwd / t_fwd_bwd:.1f}" if torch_fwd_bwd else "-",
          f"{mib(compiled_temp_bytes(fwd, x, kernel)):.1f}",
          f"{mib(compiled_temp_bytes(fwd_bwd, x, kernel, cotangent)):.1f}",
          f"{unfold:.0f}",
        ]
      )
    if have_torch:
      rows.append(
        [
          shape,
          "torch unfold",
          f"{torch_fwd * 1e3:.1f}",
          f"{floor_fwd * 1e3:.2f}",
          "1.0",
          f"{torch_fwd_bwd * 1e3:.1f}",
          f"{floor_fwd_bwd * 1e3:.2f}",
          "1.0",
          f"~{2 * unfold:.0f}",
          f"~{2 * unfold:.0f}",
          f"{unfold:.0f}",
        ]
      )
  print_table(header, rows)
  print(
    "x torch: PyTorch unfold time / ours (higher is better). floor: bytes moved / "
    "bandwidth. torch temp: unfold tensor + product, analytic."
  )


if __name__ == "__main__":
  main()
