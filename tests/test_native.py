"""The 1-D C++ loops (`ops/native.py`): where they are used, their numbers, their fallback."""

import hashlib
import itertools
import os
import subprocess
import sys
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from jax.test_util import check_grads
from reference import involution_reference_nd
from test_ops_nd import CASES_1D, make_inputs

from involution_jax import involution, portability
from involution_jax.ops import native

pytestmark = pytest.mark.skipif(
  native.library() is None, reason="the native loops could not be built here (see the warning)"
)

# Beyond test_ops_nd's cases: every stride and dilation up to 3 with windows
# up to 12 taps (past 8 the kernel gradient runs its transposed loop), odd and
# even lengths, SAME / CAUSAL / explicit padding, G = 1, several, C.
SWEEP = [
  ((2, t, 12), g, (k,), s, d, pad)
  for (t, g, k, pad), s, d in itertools.product(
    [(11, 3, 3, "SAME"), (10, 12, 4, "CAUSAL"), (9, 1, 9, "CAUSAL"), (30, 4, 12, [(5, 2)])],
    (1, 2, 3),
    (1, 2, 3),
  )
]


def _gradients_reference(x, kernel, y, stride, dilation, low):
  """Float64 NumPy dT/dx and dT/dkernel of T = sum y * involution(x, kernel), 1-D."""
  (b, t, c), (_, o, g, k) = x.shape, kernel.shape
  cg = c // g
  dx, dkernel = np.zeros_like(x), np.zeros_like(kernel)
  for i, u in itertools.product(range(o), range(k)):
    p = i * stride + u * dilation - low
    if not 0 <= p < t:
      continue
    weights = np.repeat(kernel[:, i, :, u], cg, axis=-1)  # (B, C)
    dx[:, p] += weights * y[:, i]
    dkernel[:, i, :, u] = (y[:, i] * x[:, p]).reshape(b, g, cg).sum(-1)
  return dx, dkernel


def _targets(hlo: str) -> set[str]:
  return {name for name, _ in native.TARGETS.values() if name in hlo}


def _lowered(fn, *args) -> str:
  return jax.jit(fn).lower(*args).as_text()


def test_the_native_loops_pass_the_portability_check_for_this_cpu():
  """What `--dry_run` judges on a one-device CPU is what runs there: these loops."""
  x, kernel, options, _ = make_inputs(CASES_1D[3], np.float32)
  forward = jax.jit(lambda x, k: involution(x, k, **options))
  assert _targets(portability.lower_for(forward, [x, kernel]).as_text()) == {
    native.TARGETS["out"][0]
  }
  assert not _targets(portability.lower_for(forward, [x, kernel], "tpu").as_text())


def test_auto_lowers_1d_float_on_one_device_to_the_native_loops():
  x, kernel, options, _ = make_inputs(CASES_1D[3], np.float32)
  y = np.ones((x.shape[0], kernel.shape[1], x.shape[-1]), np.float32)

  def loss(method):
    return lambda x, k, y: jnp.vdot(involution(x, k, method=method, **options), y)

  forward = lambda x, k: involution(x, k, **options)
  assert _targets(_lowered(forward, x, kernel)) == {native.TARGETS["out"][0]}
  assert _targets(_lowered(jax.value_and_grad(loss("auto"), (0, 1)), x, kernel, y)) == {
    name for name, _ in native.TARGETS.values()
  }
  assert not _targets(_lowered(jax.grad(loss("shift"), argnums=(0, 1)), x, kernel, y))
  half = lambda x, k: involution(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16), **options)
  assert not _targets(_lowered(half, x, kernel))  # bfloat16: XLA's loops
  x2, k2 = jnp.ones((1, 1, 8, 4)), jnp.ones((1, 1, 8, 2, 1, 3))
  assert not _targets(_lowered(lambda x, k: involution(x, k, padding=[(0, 0), (1, 1)]), x2, k2))


def test_export_and_sharded_programs_keep_the_xla_loops():
  x, kernel, options, _ = make_inputs(((8, 12, 8), 2, (3,), 1, 1, "CAUSAL"), np.float32)
  forward = jax.jit(lambda x, k: involution(x, k, **options))
  exported = jax.export.export(forward)(x, kernel)
  assert not _targets(exported.mlir_module())
  np.testing.assert_allclose(exported.call(x, kernel), forward(x, kernel), rtol=1e-6, atol=1e-6)
  mesh = jax.make_mesh((8,), ("data",))
  batch = NamedSharding(mesh, PartitionSpec("data"))
  xs, ks = jax.device_put(x, batch), jax.device_put(kernel, batch)
  assert not _targets(forward.lower(xs, ks).as_text())
  np.testing.assert_allclose(forward(xs, ks), forward(x, kernel), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES_1D + SWEEP)
def test_matches_numpy_references_float64(x64, case):
  x, kernel, options, pairs = make_inputs(case)
  y = np.random.default_rng(1).normal(size=(x.shape[0], kernel.shape[1], x.shape[-1]))
  out, pullback = jax.vjp(lambda x, k: involution(x, k, **options), x, kernel)
  chex.assert_shape(out, y.shape)
  chex.assert_type(out, jnp.float64)
  expected = involution_reference_nd(x, kernel, options["stride"], options["dilation"], pairs)
  np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
  references = _gradients_reference(
    x, kernel, y, options["stride"][0], options["dilation"][0], pairs[0][0]
  )
  for ours, reference in zip(pullback(jnp.asarray(y)), references):
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [CASES_1D[4], CASES_1D[7], SWEEP[14], SWEEP[35]])
def test_check_grads_orders_one_and_two(x64, case):
  x, kernel, options, _ = make_inputs(case)
  f = lambda x, kernel: involution(x, kernel, **options)
  check_grads(f, (jnp.asarray(x), jnp.asarray(kernel)), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("window, dilation", [((31,), 1), ((7,), 1), ((5,), 3)])
def test_threads_and_vmap_agree_with_the_xla_loops(window, dilation):
  """Rows enough to split across the pool's threads, float32, against method "shift"."""
  x, kernel, options, _ = make_inputs(((3, 700, 64), 4, window, 1, dilation, "CAUSAL"), np.float32)
  y = np.random.default_rng(2).normal(size=x.shape).astype(np.float32)

  def loss(method):
    return lambda x, k: jnp.vdot(involution(x, k, method=method, **options), y)

  for ours, xla in zip(
    jax.jit(jax.value_and_grad(loss("auto"), (0, 1)))(x, kernel),
    jax.jit(jax.value_and_grad(loss("shift"), (0, 1)))(x, kernel),
  ):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(xla)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)
  batched = jax.vmap(lambda a, b: involution(a, b, **options))(x[:, None], kernel[:, None])
  np.testing.assert_allclose(
    batched[:, 0], involution(x, kernel, method="shift", **options), rtol=1e-5, atol=1e-5
  )


def test_no_temporaries_forward_or_backward():
  x, kernel = jnp.ones((2, 1024, 64)), jnp.ones((2, 1024, 4, 31))

  def forward(x, kernel):
    return involution(x, kernel, padding="CAUSAL")

  both = jax.grad(lambda x, k, y: jnp.vdot(forward(x, k), y), argnums=(0, 1))
  for fn, args in ((forward, (x, kernel)), (both, (x, kernel, x))):
    assert jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes < 2**16


_CHILD = """
import warnings, jax, jax.numpy as jnp, numpy as np
from involution_jax import involution
from involution_jax.ops import native
x, k = jnp.ones((1, 9, 4)), jnp.ones((1, 9, 2, 3))
f = jax.jit(lambda x, k: involution(x, k, padding="CAUSAL"))
with warnings.catch_warnings(record=True) as caught:
  warnings.simplefilter("always")
  hlo = f.lower(x, k).as_text()
  out = f(x, k)
np.testing.assert_allclose(out, involution(x, k, padding="CAUSAL", method="patches"))
print("native" if native.TARGETS["out"][0] in hlo else "xla")
for w in caught:
  print(w.message)
"""


@pytest.mark.parametrize(
  "env, expected",
  [
    ({"CXX": "false"}, "the native 1-D CPU loops are unavailable"),  # a compiler that fails
    ({"INVOLUTION_JAX_NATIVE": "0"}, None),
    ({}, None),  # builds into a new cache, then a second process loads it
  ],
)
def test_build_fallback_and_switch(tmp_path, env, expected):
  base = {**os.environ, "INVOLUTION_JAX_CACHE": str(tmp_path), "JAX_PLATFORMS": "cpu", **env}
  runs = 1 if env else 2
  for _ in range(runs):
    done = subprocess.run(
      [sys.executable, "-c", _CHILD], env=base, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == ("native" if not env else "xla")
    if expected:
      assert len(lines) == 2 and expected in lines[1] and "false exited 1" in lines[1], lines
    else:
      assert lines[1:] == [], lines
  built = list((tmp_path / "native").glob("involution_1d-*.so"))
  assert len(built) == (0 if env else 1)


def test_a_changed_library_is_built_again_not_loaded(tmp_path):
  """The library's SHA-256 is recorded when it is built: a file that changed in the cache
  folder since (damaged, edited) is reported and replaced before anything loads it."""
  # A stand-in compiler (the digest is the subject here, not the C++): writes its -o file.
  write = "import sys; open(sys.argv[sys.argv.index('-o') + 1], 'wb').write(b'library')"
  compiler = [sys.executable, "-c", write]
  target = tmp_path / "involution_1d-test.so"
  native.build_unless_intact(compiler, target)
  intact = target.read_bytes()
  digest = target.with_name(target.name + ".sha256")
  assert digest.read_text() == hashlib.sha256(intact).hexdigest()
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # intact: nothing said, nothing built
    native.build_unless_intact(compiler, target)
  for damage in ("changed since it was built", "has no recorded digest"):
    if damage.startswith("changed"):
      target.write_bytes(intact + b"\0")
    else:
      digest.unlink()
    with pytest.warns(RuntimeWarning, match=f"{target} {damage}; building it again"):
      native.build_unless_intact(compiler, target)
    assert digest.read_text() == hashlib.sha256(target.read_bytes()).hexdigest()
    assert target.stat().st_size == len(intact)
