"""The involution op in 1-D and 3-D, rectangular windows, causal and explicit padding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads
from reference import involution_reference, involution_reference_nd

from involution_jax import involution
from involution_jax.ops import padded_output_size, padding_pairs

METHODS = ["patches", "shift"]

# (x shape, groups, window, stride, dilation, padding): odd and even lengths,
# strides 1-3, dilations 1-2, G = 1 / several / C, SAME, CAUSAL, explicit.
CASES_1D = [
  ((2, 16, 8), 2, (3,), 1, 1, "SAME"),
  ((1, 15, 6), 3, (5,), 2, 1, "SAME"),
  ((2, 13, 4), 4, (7,), 1, 2, "SAME"),
  ((2, 12, 8), 2, (4,), 1, 1, "CAUSAL"),
  ((1, 17, 6), 2, (3,), 2, 2, "CAUSAL"),
  ((1, 9, 4), 1, (1,), 3, 1, "CAUSAL"),
  ((2, 10, 4), 2, (3,), 2, 1, [(0, 2)]),
  ((1, 14, 8), 4, (6,), 3, 1, [(3, 1)]),
  # Rows that read only padding at both ends, and a window longer than x.
  ((1, 5, 4), 2, (3,), 2, 1, [(6, 7)]),
  ((2, 4, 4), 2, (7,), 1, 1, "CAUSAL"),
]
CASES_3D = [
  ((1, 5, 6, 7, 4), 2, (3, 3, 3), 1, 1, "SAME"),
  ((2, 4, 7, 5, 6), 3, (1, 3, 5), (1, 2, 2), 1, "SAME"),
  ((1, 6, 5, 6, 4), 4, (3, 3, 3), 2, (1, 2, 1), "SAME"),
  ((1, 5, 6, 4, 4), 2, (2, 3, 2), 1, 1, [(1, 0), (1, 1), (0, 1)]),
  ((1, 7, 5, 5, 2), 1, (3, 1, 3), (2, 1, 3), 2, [(2, 2), (0, 0), (1, 3)]),
  ((1, 3, 4, 4, 2), 2, (3, 3, 3), 1, 2, [(5, 4), (1, 1), (2, 2)]),
]

CASES_2D = [  # what xla.py does not cover: rectangular windows, explicit padding
  ((1, 9, 8, 6), 2, (3, 5), (2, 1), 1, "SAME"),
  ((1, 8, 7, 4), 4, (1, 7), 1, 2, "SAME"),
  ((2, 8, 8, 4), 2, (3, 3), 1, 1, [(0, 2), (1, 1)]),
  ((1, 9, 9, 4), 2, (3, 3), 2, 1, [(1, 1), (1, 1)]),  # = SAME: the 2-D path
]


def _per_dim(value, n):
  return tuple(value) if isinstance(value, tuple) else (value,) * n


def make_inputs(case, dtype=np.float64, seed=0):
  x_shape, groups, window, stride, dilation, padding = case
  n = len(x_shape) - 2
  stride, dilation = _per_dim(stride, n), _per_dim(dilation, n)
  pairs = padding_pairs(padding, window, dilation)
  out = tuple(
    padded_output_size(s, k, st, d, lo, hi)
    for s, k, st, d, (lo, hi) in zip(x_shape[1:-1], window, stride, dilation, pairs)
  )
  rng = np.random.default_rng(seed)
  x = rng.normal(size=x_shape).astype(dtype)
  kernel = rng.normal(size=(x_shape[0], *out, groups, *window)).astype(dtype)
  return x, kernel, dict(stride=stride, dilation=dilation, padding=padding), pairs


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES_1D + CASES_2D + CASES_3D)
def test_matches_numpy_reference_float64(x64, case, method):
  x, kernel, options, pairs = make_inputs(case)
  out = involution(jnp.asarray(x), jnp.asarray(kernel), method=method, **options)
  n = x.ndim - 2
  chex.assert_shape(out, (x.shape[0], *kernel.shape[1 : n + 1], x.shape[-1]))
  chex.assert_type(out, jnp.float64)
  expected = involution_reference_nd(x, kernel, options["stride"], options["dilation"], pairs)
  np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_output_sizes_follow_the_padding_rules():
  assert padding_pairs("SAME", (7,), (2,)) == ((6, 6),)
  assert padding_pairs("CAUSAL", (4,), (3,)) == ((9, 0),)
  # CAUSAL and SAME give ceil(T / s); explicit padding floor((T + lo + hi - d(K-1) - 1) / s) + 1.
  for t, k, s, d in [(17, 4, 2, 2), (16, 3, 3, 1), (9, 1, 4, 1)]:
    lo, hi = padding_pairs("CAUSAL", (k,), (d,))[0]
    assert padded_output_size(t, k, s, d, lo, hi) == -(-t // s)
  # Explicit: every output whose last tap still lies in the padded input.
  for t, k, s, d, lo, hi in [(10, 3, 2, 1, 0, 2), (14, 6, 3, 1, 3, 1), (9, 2, 1, 4, 0, 0)]:
    fits = [o for o in range(2 * t) if o * s + d * (k - 1) <= t + lo + hi - 1]
    assert padded_output_size(t, k, s, d, lo, hi) == len(fits)


def test_causal_output_reads_only_the_past(x64):
  x, kernel, options, _ = make_inputs(((1, 12, 4), 2, (4,), 1, 2, "CAUSAL"))
  jacobian = jax.jacobian(lambda x: involution(x, jnp.asarray(kernel), **options))(jnp.asarray(x))
  # d out[t] / d x[t'] over (t, t'): zero above the diagonal, not below.
  per_time = np.abs(np.asarray(jacobian)).sum(axis=(0, 2, 3, 5))
  assert np.all(np.triu(per_time, 1) == 0) and np.all(np.diag(per_time) > 0)


@pytest.mark.parametrize("method", METHODS)
def test_1d_equals_2d_with_height_one(x64, method):
  x, kernel, options, _ = make_inputs(((2, 13, 6), 3, (5,), 2, 2, "SAME"))
  one = involution(jnp.asarray(x), jnp.asarray(kernel), method=method, **options)
  two = involution(
    jnp.asarray(x[:, None]),
    jnp.asarray(kernel[:, None, :, :, None]),
    stride=2,
    dilation=2,
    method=method,
  )
  np.testing.assert_allclose(one, two[:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_3d_with_depth_one_equals_2d(x64, method):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 9, 8, 8))
  kernel = rng.normal(size=(2, 5, 4, 4, 3, 3))
  two = involution(jnp.asarray(x), jnp.asarray(kernel), stride=2, method=method)
  three = involution(
    jnp.asarray(x[:, None]),
    jnp.asarray(kernel[:, None, :, :, :, None]),
    stride=(1, 2, 2),
    method=method,
  )
  np.testing.assert_allclose(three[:, 0], two, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(two, involution_reference(x, kernel, 2, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_kernel_constant_over_positions_is_a_depthwise_convolution(x64, n):
  """Same kernel everywhere, one group per channel: lax's grouped convolution."""
  rng = np.random.default_rng(n)
  c, window = 4, (3, 5, 3)[:n]
  x = rng.normal(size=(2, *(7, 6, 5)[:n], c))
  taps = rng.normal(size=(c, *window))
  stride, dilation = (2, 1, 2)[:n], (1, 2, 1)[:n]
  pairs = padding_pairs("SAME", window, dilation)
  out_shape = tuple(-(-s // st) for s, st in zip(x.shape[1:-1], stride))
  kernel = np.broadcast_to(taps, (2, *out_shape, c, *window))
  ours = involution(jnp.asarray(x), jnp.asarray(kernel), stride=stride, dilation=dilation)
  spec = {1: "NWC", 2: "NHWC", 3: "NDHWC"}[n]
  rhs = np.moveaxis(taps, 0, -1)[..., None, :]  # (*window, 1, C): one input channel per group
  conv = lax.conv_general_dilated(
    jnp.asarray(x),
    jnp.asarray(rhs),
    stride,
    pairs,
    rhs_dilation=dilation,
    dimension_numbers=(spec, spec[1:-1] + "IO", spec),
    feature_group_count=c,
    precision=lax.Precision.HIGHEST,
  )
  np.testing.assert_allclose(ours, conv, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
  "case", [CASES_1D[1], CASES_1D[4], CASES_1D[7], CASES_1D[8], CASES_3D[2], CASES_3D[3]]
)
def test_check_grads_orders_one_and_two(x64, case):
  x, kernel, options, _ = make_inputs(case)
  f = lambda x, kernel: involution(x, kernel, method="shift", **options)
  check_grads(f, (jnp.asarray(x), jnp.asarray(kernel)), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("case", [CASES_1D[3], CASES_3D[1]])
def test_float32_gradients_agree_jit_and_vmap(case):
  x, kernel, options, _ = make_inputs(case, np.float32)
  x, kernel = jnp.asarray(x), jnp.asarray(kernel)

  def loss(x, kernel, method):
    return jnp.sum(jnp.sin(involution(x, kernel, method=method, **options)))

  grads = {
    m: jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(x, kernel, m) for m in METHODS
  }
  for a, b in zip(grads["shift"], grads["patches"]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  batched = jax.vmap(lambda a, b: involution(a, b, **options))(x[:, None], kernel[:, None])
  np.testing.assert_allclose(batched[:, 0], involution(x, kernel, **options), rtol=1e-6, atol=1e-6)


def _temp_bytes(fn, *args):
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize(
  "x_shape, groups, window, padding",
  [
    ((2, 1024, 64), 4, (31,), "CAUSAL"),
    ((1, 12, 20, 20, 32), 2, (3, 3, 3), "SAME"),
  ],
)
def test_shift_never_materialises_the_patch_tensor(x_shape, groups, window, padding):
  x = jnp.ones(x_shape)
  kernel = jnp.ones((x_shape[0], *x_shape[1:-1], groups, *window))
  y = jnp.ones(x_shape)
  patch = x.nbytes * int(np.prod(window))

  def forward(method):
    return lambda x, kernel: involution(x, kernel, padding=padding, method=method)

  def forward_backward(method):
    return jax.grad(lambda x, kernel, y: jnp.vdot(forward(method)(x, kernel), y), argnums=(0, 1))

  assert _temp_bytes(forward("patches"), x, kernel) >= patch  # the measurement can see one
  inputs = x.nbytes + kernel.nbytes
  assert _temp_bytes(forward("shift"), x, kernel) < min(patch / 4, inputs)
  assert _temp_bytes(forward_backward("shift"), x, kernel, y) < min(0.15 * patch, 2 * inputs)


def test_exports_with_a_symbolic_batch():
  x, kernel, options, _ = make_inputs(CASES_1D[4], np.float32)
  batch = jax.export.symbolic_shape("b")[0]
  exported = jax.export.export(jax.jit(lambda x, k: involution(x, k, **options)))(
    jax.ShapeDtypeStruct((batch, *x.shape[1:]), jnp.float32),
    jax.ShapeDtypeStruct((batch, *kernel.shape[1:]), jnp.float32),
  )
  np.testing.assert_allclose(
    exported.call(x, kernel), involution(x, kernel, **options), rtol=1e-6, atol=1e-6
  )
