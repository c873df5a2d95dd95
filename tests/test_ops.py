"""The involution op: values, gradients, transformations, memory, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from reference import involution_reference

from involution_jax import involution
from involution_jax.ops import output_size, patch_tensor_bytes, resolve_method

METHODS = ["patches", "shift"]

# (B, H, W, C, G, K, stride, dilation): K 1/3/5/7, stride 1/2/3, dilation 1/2,
# G = 1, several, C (depthwise), odd and even H / W.
CASES = [
  (2, 8, 8, 16, 1, 3, 1, 1),
  (1, 7, 9, 12, 3, 5, 1, 1),
  (2, 9, 6, 8, 8, 3, 2, 1),
  (1, 10, 11, 6, 2, 7, 1, 2),  # halo > 3x the map: the input gradient shifts in place
  (1, 11, 7, 4, 4, 5, 2, 2),
  (2, 6, 6, 8, 2, 1, 1, 1),
  (1, 9, 9, 6, 3, 1, 2, 1),
  (1, 12, 13, 8, 2, 3, 3, 1),
  (1, 5, 4, 96, 2, 3, 1, 1),  # 48 channels per group: the chunked channel sum
  # Larger maps: most pixels away from the borders.
  (1, 20, 18, 8, 2, 3, 2, 1),
  (1, 24, 22, 4, 1, 5, 1, 2),
]


def make_inputs(case, dtype=np.float64, seed=0):
  b, h, w, c, g, k, s, d = case
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, h, w, c)).astype(dtype)
  kernel = rng.normal(size=(b, output_size(h, s), output_size(w, s), g, k, k)).astype(dtype)
  return x, kernel, s, d


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES)
def test_matches_numpy_reference_float64(x64, case, method):
  x, kernel, s, d = make_inputs(case)
  out = involution(jnp.asarray(x), jnp.asarray(kernel), stride=s, dilation=d, method=method)
  chex.assert_shape(out, (x.shape[0], kernel.shape[1], kernel.shape[2], x.shape[3]))
  chex.assert_type(out, jnp.float64)
  np.testing.assert_allclose(out, involution_reference(x, kernel, s, d), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES[:5])
def test_float32_methods_agree_values_and_gradients(case):
  x, kernel, s, d = (
    jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in make_inputs(case, np.float32)
  )
  cotangent = jax.random.normal(
    jax.random.PRNGKey(0), (x.shape[0], kernel.shape[1], kernel.shape[2], x.shape[3])
  )

  def loss(x, kernel, method):
    return jnp.vdot(involution(x, kernel, stride=s, dilation=d, method=method), cotangent)

  results = {
    m: (
      jax.jit(involution, static_argnames=("stride", "dilation", "method"))(
        x, kernel, stride=s, dilation=d, method=m
      ),
      jax.grad(loss, argnums=(0, 1))(x, kernel, m),
    )
    for m in METHODS
  }
  (out_p, grads_p), (out_s, grads_s) = results["patches"], results["shift"]
  np.testing.assert_allclose(out_s, out_p, rtol=1e-5, atol=1e-5)
  for gs, gp in zip(grads_s, grads_p):
    chex.assert_equal_shape([gs, gp])
    np.testing.assert_allclose(gs, gp, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[4], CASES[7]])
def test_check_grads_float64(x64, case, method):
  x, kernel, s, d = make_inputs(case)
  f = lambda x, kernel: involution(x, kernel, stride=s, dilation=d, method=method)
  check_grads(f, (jnp.asarray(x), jnp.asarray(kernel)), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("case", [CASES[2], CASES[3]])
def test_shift_second_order_gradients(x64, case):
  x, kernel, s, d = make_inputs(case)
  f = lambda x, kernel: involution(x, kernel, stride=s, dilation=d, method="shift")
  check_grads(f, (jnp.asarray(x), jnp.asarray(kernel)), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("method", METHODS)
def test_vmap_matches_loop_and_vmap_of_grad(x64, method):
  x, kernel, s, d = make_inputs(CASES[4])
  xs = jnp.stack([x, 2 * x + 1])
  ks = jnp.stack([kernel, -kernel])
  f = lambda x, k: involution(x, k, stride=s, dilation=d, method=method)
  batched = jax.vmap(f)(xs, ks)
  for i in range(2):
    np.testing.assert_allclose(batched[i], involution_reference(xs[i], ks[i], s, d), rtol=1e-12)
  # One argument unbatched, vmapped axis not leading.
  shared = jax.vmap(f, in_axes=(3, None), out_axes=3)(jnp.stack([x, x], axis=3), kernel)
  np.testing.assert_allclose(shared[:, :, :, 1], involution_reference(x, kernel, s, d), rtol=1e-12)
  # Per-example gradients.
  loss = lambda x, k: jnp.sum(f(x, k) ** 2)
  per_example = jax.vmap(jax.grad(loss, argnums=(0, 1)))(xs, ks)
  for i in range(2):
    expected = jax.grad(loss, argnums=(0, 1))(xs[i], ks[i])
    for got, want in zip(per_example, expected):
      np.testing.assert_allclose(got[i], want, rtol=1e-10)


def test_auto_is_shift_and_equal():
  assert resolve_method("auto") == "shift"
  x, kernel, s, d = make_inputs(CASES[0], np.float32)
  np.testing.assert_array_equal(
    involution(x, kernel, stride=s, dilation=d),
    involution(x, kernel, stride=s, dilation=d, method="shift"),
  )


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_returns_bfloat16_accumulated_in_float32(method):
  # 4 taps of 1 + 255 tiny terms: a bf16 accumulator (8 bits of mantissa)
  # would stop adding the tiny terms once the sum is large.
  x = jnp.ones((1, 16, 16, 1), jnp.bfloat16)
  kernel = jnp.full((1, 16, 16, 1, 15, 15), 2.0**-6, jnp.bfloat16)
  kernel = kernel.at[..., 7, 7].set(8.0)
  out = involution(x, kernel, method=method)
  chex.assert_type(out, jnp.bfloat16)
  expected = involution_reference(np.float32(x), np.float32(kernel))
  np.testing.assert_allclose(np.float32(out), expected, rtol=2**-8)
  # And random data: close to the float64 result at bf16 precision.
  xr, kr, s, d = make_inputs(CASES[3], np.float32)
  out = involution(
    jnp.asarray(xr, jnp.bfloat16),
    jnp.asarray(kr, jnp.bfloat16),
    stride=s,
    dilation=d,
    method=method,
  )
  chex.assert_type(out, jnp.bfloat16)
  want = involution_reference(
    np.float32(jnp.asarray(xr, jnp.bfloat16)), np.float32(jnp.asarray(kr, jnp.bfloat16)), s, d
  )
  np.testing.assert_allclose(np.float32(out), want, rtol=2e-2, atol=5e-2)


def test_bfloat16_gradients_have_input_dtypes():
  x, kernel, s, d = make_inputs(CASES[2], np.float32)
  x, kernel = jnp.asarray(x, jnp.bfloat16), jnp.asarray(kernel, jnp.bfloat16)
  gx, gk = jax.grad(
    lambda x, k: jnp.sum(involution(x, k, stride=s).astype(jnp.float32)), argnums=(0, 1)
  )(x, kernel)
  chex.assert_type([gx, gk], jnp.bfloat16)
  gx32, gk32 = jax.grad(lambda x, k: jnp.sum(involution(x, k, stride=s)), argnums=(0, 1))(
    x.astype(jnp.float32), kernel.astype(jnp.float32)
  )
  np.testing.assert_allclose(np.float32(gx), gx32, rtol=2e-2, atol=5e-2)
  np.testing.assert_allclose(np.float32(gk), gk32, rtol=2e-2, atol=5e-2)


def _temp_bytes(fn, *args):
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("stride", [1, 2])
def test_shift_never_materialises_the_patch_tensor(stride):
  b, h, c, g, k = 2, 32, 32, 2, 7
  ho = output_size(h, stride)
  x = jnp.ones((b, h, h, c))
  kernel = jnp.ones((b, ho, ho, g, k, k))
  y = jnp.ones((b, ho, ho, c))
  patch = patch_tensor_bytes(x.shape, k, stride)

  def forward(method):
    return lambda x, kernel: involution(x, kernel, stride=stride, method=method)

  def forward_backward(method):
    # The cotangent is an argument: closed over, XLA would fold it into constants.
    return jax.grad(lambda x, kernel, y: jnp.vdot(forward(method)(x, kernel), y), argnums=(0, 1))

  # The measurement can see a patch tensor: the reference formulation has one.
  assert _temp_bytes(forward("patches"), x, kernel) >= patch
  # Shift: temporaries of a few input-sized buffers, never one of patch size;
  # forward+backward within the performance target, 15% of the patch tensor.
  inputs = x.nbytes + kernel.nbytes
  assert _temp_bytes(forward("shift"), x, kernel) < min(patch / 4, inputs)
  assert _temp_bytes(forward_backward("shift"), x, kernel, y) < min(0.15 * patch, 2 * inputs)


def test_shift_output_is_summed_once_for_all_its_consumers():
  # BatchNorm-like consumers: two reductions and an elementwise pass. XLA's CPU
  # fusion would otherwise recompute the 49-tap sum inside each of them.
  b, h, c, g, k = 2, 16, 32, 2, 7
  x, kernel = jnp.ones((b, h, h, c)), jnp.ones((b, h, h, g, k, k))

  def consumers(x, kernel):
    out = involution(x, kernel, method="shift")
    mean = jnp.mean(out, (0, 1, 2))
    var = jnp.mean(jnp.square(out - mean), (0, 1, 2))
    return jax.nn.relu((out - mean) * jax.lax.rsqrt(var + 1e-5))

  hlo = jax.jit(consumers).lower(x, kernel).compile().as_text()
  kernel_tap = f"= f32[{b},{h},{h},{g},1,1]{{5,4,3,2,1,0}} slice("
  assert hlo.count(kernel_tap) == k * k


BAD_INPUTS = [
  (dict(x=(2, 8, 8), kernel=(2, 8, 8, 1, 3, 3)), "rank 4"),
  (dict(x=(2, 8, 8, 4), kernel=(2, 8, 8, 3, 3)), "rank 6"),
  (dict(x=(2, 8, 8, 4), kernel=(2, 8, 8, 1, 4, 4)), "K must be odd, got K=4"),
  (dict(x=(2, 8, 8, 4), kernel=(2, 8, 8, 1, 3, 4)), "K must be odd, got K=4"),
  (dict(x=(2, 8, 8, 4), kernel=(3, 8, 8, 1, 3, 3)), "batch 3 != x batch 2"),
  (
    dict(x=(2, 8, 8, 4), kernel=(2, 8, 7, 1, 3, 3)),
    r"expected \(ceil\(H/s\), ceil\(W/s\)\) = \(8, 8\)",
  ),
  (dict(x=(2, 9, 9, 4), kernel=(2, 4, 4, 1, 3, 3), stride=2), r"= \(5, 5\)"),
  (dict(x=(2, 8, 8, 6), kernel=(2, 8, 8, 4, 3, 3)), "C=6 must be divisible by .* G=4"),
  (dict(x=(2, 8, 8, 4), kernel=(2, 8, 8, 1, 3, 3), stride=0), "stride must be an int >= 1, got 0"),
  (
    dict(x=(2, 8, 8, 4), kernel=(2, 8, 8, 1, 3, 3), dilation=-1),
    "dilation must be an int >= 1, got -1",
  ),
  (
    dict(x=(2, 8, 8, 4), kernel=(2, 8, 8, 1, 3, 3), stride=1.5),
    "stride must be an int >= 1, got 1.5",
  ),
  (dict(x=(2, 8, 8, 4), kernel=(2, 8, 8, 1, 3, 3), method="unfold"), "unknown method 'unfold'"),
  # 1-D, 3-D and padding (the N-D op).
  (dict(x=(2, 8, 4), kernel=(2, 8, 1, 3, 3)), r"rank 4 \(B, To, G, K\)"),
  (dict(x=(2, 8, 8, 8, 8, 8, 4), kernel=(2, 8, 1, 3)), "rank 3, 4 or 5"),
  (dict(x=(2, 8, 4), kernel=(2, 8, 1, 4)), "K must be odd, got K=4"),
  (
    dict(x=(2, 8, 8, 4), kernel=(2, 8, 8, 1, 3, 3), padding="CAUSAL"),
    "'CAUSAL' is for 1-D inputs, got 2",
  ),
  (dict(x=(2, 8, 4), kernel=(2, 8, 1, 3), stride=(1, 1)), r"stride must be an int or 1 ints"),
  (
    dict(x=(2, 4, 4, 4, 4), kernel=(2, 4, 4, 4, 1, 3, 3, 3), dilation=(1, 0, 1)),
    "dilation must be an int >= 1, got 0",
  ),
  (dict(x=(2, 8, 4), kernel=(2, 8, 1, 3), padding=[(1, 1), (1, 1)]), "1 \\(low, high\\) pairs"),
  (dict(x=(2, 8, 4), kernel=(2, 8, 1, 3), padding=[(-1, 3)]), "pairs of ints >= 0"),
  (dict(x=(2, 8, 4), kernel=(2, 8, 1, 3), padding="VALID"), "unknown padding 'VALID'"),
  (dict(x=(2, 8, 4), kernel=(2, 7, 1, 3), padding=[(0, 0)]), r"floor\(.* \+ 1 = \(6,\)"),
  (dict(x=(2, 8, 4), kernel=(2, 8, 1, 3), method="pallas"), "'pallas' supports 2-D"),
  (dict(x=(2, 8, 8, 4), kernel=(2, 8, 8, 1, 3, 5), method="pallas"), "square window"),
]


@pytest.mark.parametrize("spec,message", BAD_INPUTS)
def test_bad_input_raises_clear_error(spec, message):
  spec = dict(spec)
  x, kernel = jnp.ones(spec.pop("x")), jnp.ones(spec.pop("kernel"))
  with pytest.raises(ValueError, match=message):
    involution(x, kernel, **spec)


def test_integer_input_is_refused():
  with pytest.raises(ValueError, match="floating point, got dtype int32"):
    involution(jnp.ones((1, 4, 4, 2), jnp.int32), jnp.ones((1, 4, 4, 1, 3, 3)))


def test_nested_lists_are_arrays_like_any_other():
  rng = np.random.default_rng(0)
  x, kernel = rng.normal(size=(1, 4, 4, 2)), rng.normal(size=(1, 4, 4, 1, 3, 3))
  as_lists = involution(x.astype(np.float32).tolist(), kernel.astype(np.float32).tolist())
  np.testing.assert_array_equal(as_lists, involution(jnp.float32(x), jnp.float32(kernel)))
  with pytest.raises(ValueError, match="floating point, got dtype int32"):
    involution([[[[1, 2]]]], [[[[[[1]]]]]])


# The Pallas (Triton) kernels, run by Pallas' interpreter on CPU.
PALLAS_CASES = [c for c in CASES if (c[3] // c[4]) & (c[3] // c[4] - 1) == 0][:5]


@pytest.mark.parametrize("case", PALLAS_CASES)
def test_pallas_matches_reference_and_gradients(x64, case):
  x, kernel, s, d = make_inputs(case)
  f = lambda x, kernel: involution(x, kernel, stride=s, dilation=d, method="pallas")
  np.testing.assert_allclose(
    f(jnp.asarray(x), jnp.asarray(kernel)),
    involution_reference(x, kernel, s, d),
    rtol=1e-12,
    atol=1e-12,
  )
  check_grads(f, (jnp.asarray(x), jnp.asarray(kernel)), order=1, modes=("fwd", "rev"))


def test_pallas_float32_bfloat16_and_vmap():
  x, kernel, s, d = make_inputs((2, 9, 10, 32, 2, 5, 1, 1), np.float32)
  shift = involution(x, kernel, method="shift")
  np.testing.assert_allclose(involution(x, kernel, method="pallas"), shift, rtol=1e-5, atol=1e-5)
  out = involution(jnp.asarray(x, jnp.bfloat16), jnp.asarray(kernel, jnp.bfloat16), method="pallas")
  chex.assert_type(out, jnp.bfloat16)
  np.testing.assert_allclose(np.float32(out), shift, rtol=5e-2, atol=1e-1)
  batched = jax.vmap(lambda a, b: involution(a, b, method="pallas"))(
    jnp.stack([x, -x]), jnp.stack([kernel, kernel])
  )
  np.testing.assert_allclose(batched[1], -shift, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,kernels", [(1, 3), (2, 2)])
def test_pallas_kernels_lower_to_triton_for_cuda(stride, kernels):
  """Cross-lowering on this CPU machine compiles the kernels to Triton IR."""
  x = jnp.ones((2, 14, 14, 64))
  kernel = jnp.ones((2, 14 // stride, 14 // stride, 4, 7, 7))
  loss = lambda x, k: jnp.sum(involution(x, k, stride=stride, method="pallas") ** 2)
  lowered = (
    jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, kernel).lower(lowering_platforms=("cuda",))
  )
  # Forward, kernel gradient and (stride 1) input gradient are Triton kernels.
  assert lowered.as_text().count("xla.gpu.triton") == kernels


def test_pallas_refuses_what_it_cannot_do():
  with pytest.raises(ValueError, match="power of two for the Pallas kernels, got 3"):
    involution(jnp.ones((1, 4, 4, 6)), jnp.ones((1, 4, 4, 2, 3, 3)), method="pallas")
