"""Involution as a JAX primitive: any order of differentiation, vmap, jit, export.

Involution is one trilinear form in the input x, the kernel and the output
cotangent y:

    T(x, kernel, y) = sum y[b,o,c] kernel[b,o,g(c),t] x[b, o*s + t*d - low, c]

(per spatial dimension; in 2-D SAME, o = (i, j), t = (u, v), low = d*(K//2)).

The forward pass is dT/dy, the input gradient dT/dx and the kernel gradient
dT/dkernel. One primitive, `involution_partial_p`, computes any of the three
from the other two arrays. Since the form is trilinear, the transpose and JVP
of each partial are again partials, which gives reverse and forward mode to
any order without autodiff ever seeing the implementation (whose own autodiff
would materialise prod(W) copies of the input). A batching rule folds vmapped
axes into the batch.

`impl` picks the implementation of 2-D SAME square windows: "xla" (`xla.py`,
plain HLO: every backend, sharding, export) or "pallas" (`pallas.py`, Triton
kernels on GPUs, Pallas' interpreter elsewhere). Every other case (1-D, 3-D,
rectangular windows, causal or explicit padding) runs `xla_nd.py`, except that
"auto" lowers 1-D on the CPU to `native.py`'s C++ loops where they apply.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from involution_jax.ops import native, pallas, xla, xla_nd

# Canonical order of the three arrays of the trilinear form.
_NAMES = ("x", "kernel", "out")
_STATIC = ("result", "stride", "dilation", "padding", "avals", "impl")


def is_square_same_2d(kernel_shape, stride, dilation, padding) -> bool:
  """The case `xla.py` (and the Pallas kernels) handle: 2-D, K x K odd, SAME, one stride.

  `stride`, `dilation`: N ints; `padding`: N (low, high) pairs.
  """
  if len(stride) != 2 or len(kernel_shape) != 6:
    return False
  k = kernel_shape[-1]
  return (
    kernel_shape[-2] == k
    and k % 2 == 1
    and stride[0] == stride[1]
    and dilation[0] == dilation[1]
    and tuple(map(tuple, padding)) == ((dilation[0] * (k // 2),) * 2,) * 2
  )


def _partial_impl(a, b, *, result, stride, dilation, padding, avals, impl, interpret=True):
  """Computes the partial of T named `result` from the other two arrays."""
  (x_shape, _), (k_shape, _), _ = avals
  dtype = avals[_NAMES.index(result)][1]
  if not is_square_same_2d(k_shape, stride, dilation, padding):
    n = len(stride)
    if result == "out":
      return xla_nd.aggregate(a, b, stride, dilation, padding, dtype)
    if result == "x":
      return xla_nd.aggregate_grad_x(a, b, x_shape[1:-1], stride, dilation, padding, dtype)
    return xla_nd.aggregate_grad_kernel(
      a, b, k_shape[n + 2 :], k_shape[n + 1], stride, dilation, padding, dtype
    )
  stride, dilation = stride[0], dilation[0]
  if impl == "pallas":
    extra = dict(interpret=interpret)
    module = pallas
  else:
    extra, module = {}, xla
  if result == "out":
    return module.aggregate(a, b, stride, dilation, dtype, **extra)
  if result == "x":
    return module.aggregate_grad_x(a, b, x_shape[1:3], stride, dilation, dtype, **extra)
  return module.aggregate_grad_kernel(
    a, b, k_shape[-1], k_shape[3], stride, dilation, dtype, **extra
  )


involution_partial_p = Primitive("involution_partial")


@partial(jax.jit, static_argnames=_STATIC)
def _compiled(a, b, **params):
  """Outside jit: the primitive compiled alone, through the platform's lowering."""
  return involution_partial_p.bind(a, b, **params)


involution_partial_p.def_impl(_compiled)
_xla_lowering = mlir.lower_fun(_partial_impl, multiple_results=False)
mlir.register_lowering(involution_partial_p, _xla_lowering)


def _cpu_lowering(ctx, a, b, *, impl, avals, **params):
  """`native.py`'s C++ loops where they apply ("auto", 1-D, ...), else XLA's."""
  if impl == "auto" and native.applies(ctx, avals, len(params["stride"])):
    (stride,), (dilation,), ((low, _),) = params["stride"], params["dilation"], params["padding"]
    return native.lower(
      ctx, a, b, result=params["result"], stride=stride, dilation=dilation, low=low
    )
  return _xla_lowering(ctx, a, b, impl=impl, avals=avals, **params)


mlir.register_lowering(involution_partial_p, _cpu_lowering, platform="cpu")
for _platform in ("cuda", "rocm"):  # Pallas compiles (Triton) on GPUs, interprets on CPU
  mlir.register_lowering(
    involution_partial_p,
    mlir.lower_fun(partial(_partial_impl, interpret=False), multiple_results=False),
    platform=_platform,
  )


def _tpu_lowering(ctx, a, b, *, impl, **params):
  """On TPU the interpreted Triton kernels would run (slowly) instead of failing: refuse them."""
  if impl == "pallas":
    raise ValueError("method 'pallas' targets GPUs (Triton kernels); on TPU use 'shift'")
  return _xla_lowering(ctx, a, b, impl=impl, **params)


mlir.register_lowering(involution_partial_p, _tpu_lowering, platform="tpu")


@involution_partial_p.def_abstract_eval
def _partial_abstract_eval(a, b, *, result, avals, **_):
  shape, dtype = avals[_NAMES.index(result)]
  return jax.core.ShapedArray(shape, dtype)


def _bind(operands: dict, result: str, **params) -> jax.Array:
  """Binds the partial `result` with the two other arrays from `operands`."""
  a, b = (operands[n] for n in _NAMES if n != result)
  return involution_partial_p.bind(a, b, result=result, **params)


def _transpose_rule(position: int, cotangent, a, b, *, result, **params):
  """Transpose w.r.t. operand `position`: the partial for that array's slot."""
  others = [n for n in _NAMES if n != result]
  wanted, kept = others[position], others[1 - position]
  return _bind({result: cotangent, kept: (b, a)[position]}, wanted, **params)


ad.defbilinear(involution_partial_p, partial(_transpose_rule, 0), partial(_transpose_rule, 1))


def _batch_rule(args, dims, *, avals, **params):
  """Folds the vmapped axis into the batch axis B (axis 0 of every array)."""
  size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
  folded = []
  for a, d in zip(args, dims):
    a = jnp.broadcast_to(a, (size,) + a.shape) if d is None else jnp.moveaxis(a, d, 0)
    folded.append(a.reshape((size * a.shape[1],) + a.shape[2:]))
  avals = tuple(((size * s[0],) + tuple(s[1:]), t) for s, t in avals)
  out = involution_partial_p.bind(*folded, avals=avals, **params)
  return out.reshape((size, -1) + out.shape[1:]), 0


batching.primitive_batchers[involution_partial_p] = _batch_rule


def involution_primitive(
  x: jax.Array,
  kernel: jax.Array,
  stride: tuple[int, ...],
  dilation: tuple[int, ...],
  padding: tuple[tuple[int, int], ...],
  impl: str = "xla",
) -> jax.Array:
  """x: (B, *S, C), kernel: (B, *O, G, *W) -> (B, *O, C) in x's dtype.

  `stride`, `dilation`: N ints; `padding`: N (low, high) pairs. Accumulated in
  float32 (float64 for float64 input). `impl` "xla", "pallas" or "auto"; 2-D
  SAME square windows run `xla.py`'s (or the Pallas) loops, every other case
  `xla_nd.py`'s, or for "auto" in 1-D on the CPU `native.py`'s where they apply.
  """
  n = len(stride)
  out_shape = (x.shape[0], *kernel.shape[1 : n + 1], x.shape[-1])
  avals = (
    (tuple(x.shape), np.dtype(x.dtype)),
    (tuple(kernel.shape), np.dtype(kernel.dtype)),
    (out_shape, np.dtype(x.dtype)),
  )
  return _bind(
    {"x": x, "kernel": kernel},
    "out",
    stride=tuple(stride),
    dilation=tuple(dilation),
    padding=tuple(map(tuple, padding)),
    avals=avals,
    impl=impl,
  )
