"""The Involution layer and the PyTorch-exact BatchNorm."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from reference import involution_reference

from involution_jax import Involution
from involution_jax.models.layers import (
  BatchNorm,
  ConvModule,
  PointwiseConv,
  avg_pool_ceil,
  batch_norm_train,
  max_pool,
)
from involution_jax.ops.conv import conv_nhwc


def _numpy_layer(params, stats, x, kernel_size, stride, group_channels, train, eps=1e-5):
  """The official layer, step by step in float64 NumPy."""
  x = np.asarray(x, np.float64)
  b, h, w, c = x.shape
  if stride > 1:  # sizes divisible by the stride here
    pooled = x.reshape(b, h // stride, stride, w // stride, stride, c).mean(axis=(2, 4))
  else:
    pooled = x
  hidden = pooled @ np.float64(params["conv1"]["conv"]["kernel"])
  if train:
    mean, var = hidden.mean(axis=(0, 1, 2)), hidden.var(axis=(0, 1, 2))
  else:
    mean, var = np.float64(stats["mean"]), np.float64(stats["var"])
  bn = params["conv1"]["bn"]
  hidden = (hidden - mean) / np.sqrt(var + eps) * np.float64(bn["scale"]) + np.float64(bn["bias"])
  hidden = np.maximum(hidden, 0)
  conv2 = params["conv2"]["conv"]
  kernel = hidden @ np.float64(conv2["kernel"]) + np.float64(conv2["bias"])
  groups = c // group_channels
  kernel = kernel.reshape(kernel.shape[:3] + (groups, kernel_size, kernel_size))
  return involution_reference(x, kernel, stride)


def _randomise(tree, seed):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(
    treedef,
    [
      0.5 + jax.random.uniform(k, leaf.shape)
      if leaf.ndim == 1
      else jax.random.normal(k, leaf.shape) * 0.3
      for k, leaf in zip(keys, leaves)
    ],
  )


def test_parameter_names_and_shapes():
  layer = Involution(kernel_size=7, stride=1, group_channels=16, reduction_ratio=4)
  variables = layer.init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 64)), train=False)
  shapes = jax.tree.map(jnp.shape, variables)
  assert shapes == {
    "params": {
      "conv1": {"conv": {"kernel": (64, 16)}, "bn": {"scale": (16,), "bias": (16,)}},
      "conv2": {"conv": {"kernel": (16, 196), "bias": (196,)}},
    },
    "batch_stats": {"conv1": {"bn": {"mean": (16,), "var": (16,)}}},
  }


def test_defaults_are_the_papers():
  layer = Involution()
  assert (layer.kernel_size, layer.group_channels, layer.reduction_ratio, layer.stride) == (
    7,
    16,
    4,
    1,
  )


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_layer_matches_numpy_official_layer(train, stride):
  layer = Involution(kernel_size=5, stride=stride, group_channels=4, reduction_ratio=2)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 12, 16))
  variables = layer.init(jax.random.PRNGKey(0), x, train=False)
  params = _randomise(variables["params"], 2)
  stats = {"mean": jnp.linspace(-0.2, 0.2, 8), "var": jnp.linspace(0.5, 1.5, 8)}
  batch_stats = {"conv1": {"bn": stats}}
  out, updates = layer.apply(
    {"params": params, "batch_stats": batch_stats}, x, train=train, mutable=["batch_stats"]
  )
  chex.assert_shape(out, (2, 8 // stride, 12 // stride, 16))
  expected = _numpy_layer(params, stats, x, 5, stride, 4, train)
  np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-4)
  moved = not np.allclose(updates["batch_stats"]["conv1"]["bn"]["mean"], stats["mean"])
  assert moved == train


def test_odd_sizes_with_stride_two_give_ceil_shapes():
  layer = Involution(kernel_size=3, stride=2, group_channels=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 9, 7, 16))
  variables = layer.init(jax.random.PRNGKey(0), x, train=False)
  out = layer.apply(variables, x, train=False)
  chex.assert_shape(out, (1, 5, 4, 16))
  chex.assert_tree_all_finite(out)


def test_avg_pool_ceil_partial_window_averages_pixels_inside():
  x = jnp.arange(1 * 3 * 3 * 1, dtype=jnp.float32).reshape(1, 3, 3, 1)
  pooled = avg_pool_ceil(x, 2)
  expected = np.array([[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8]])
  np.testing.assert_allclose(pooled[0, :, :, 0], expected)


@pytest.mark.parametrize("shape", [(2, 12, 12, 3), (1, 9, 13, 2), (2, 1, 2, 1)])
def test_max_pool_matches_pytorch_values_and_gradients(shape, torch):
  # Few distinct values, so windows hold ties: the gradient must go to the first maximum.
  x = np.random.default_rng(0).integers(0, 3, shape).astype(np.float32)
  cotangent = np.random.default_rng(1).normal(size=max_pool(jnp.asarray(x), 3, 2, 1).shape)
  out, vjp = jax.vjp(lambda a: max_pool(a, 3, 2, 1), jnp.asarray(x))
  (grad,) = vjp(jnp.asarray(cotangent, jnp.float32))
  xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  want = torch.nn.functional.max_pool2d(xt, 3, 2, 1)
  want.backward(torch.tensor(cotangent.transpose(0, 3, 1, 2), dtype=torch.float32))
  np.testing.assert_array_equal(out, want.detach().numpy().transpose(0, 2, 3, 1))
  np.testing.assert_allclose(grad, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6)


def test_max_pool_propagates_nan():
  x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 1, 0].set(jnp.nan)
  assert np.isnan(max_pool(x, 3, 2, 1)[0, 0, 0, 0])


def test_batchnorm_updates_running_stats_like_pytorch():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 5, 6)) * 2 + 1
  bn = BatchNorm()
  variables = bn.init(jax.random.PRNGKey(0), x, train=True)
  y, updates = bn.apply(variables, x, train=True, mutable=["batch_stats"])
  xn = np.asarray(x, np.float64).reshape(-1, 6)
  n = xn.shape[0]
  np.testing.assert_allclose(
    y.reshape(-1, 6), (xn - xn.mean(0)) / np.sqrt(xn.var(0) + 1e-5), rtol=1e-5, atol=1e-5
  )
  stats = updates["batch_stats"]
  np.testing.assert_allclose(stats["mean"], 0.1 * xn.mean(0), rtol=1e-5)
  # PyTorch: running_var <- 0.9 * running_var + 0.1 * unbiased batch variance.
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * xn.var(0) * n / (n - 1), rtol=1e-5)


def test_batch_norm_train_gradients(x64):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 4, 5, 6)) * 2 + 1)
  scale, bias = jnp.asarray(rng.normal(size=6)), jnp.asarray(rng.normal(size=6))
  cotangent = jnp.asarray(rng.normal(size=x.shape))
  loss = lambda x, s, b: jnp.vdot(batch_norm_train(x, s, b, 1e-5)[0], cotangent)
  check_grads(loss, (x, scale, bias), order=1, modes=("rev",))

  def autodiff_loss(x, s, b):  # the textbook forward, differentiated by JAX
    mean = jnp.mean(x, (0, 1, 2))
    y = (x - mean) / jnp.sqrt(jnp.mean(jnp.square(x - mean), (0, 1, 2)) + 1e-5) * s + b
    return jnp.vdot(y, cotangent)

  chex.assert_trees_all_close(
    jax.grad(loss, (0, 1, 2))(x, scale, bias),
    jax.grad(autodiff_loss, (0, 1, 2))(x, scale, bias),
    rtol=1e-10,
  )
  _, mean, var = batch_norm_train(x, scale, bias, 1e-5)
  np.testing.assert_allclose(var, np.var(np.asarray(x).reshape(-1, 6), 0), rtol=1e-12)
  np.testing.assert_allclose(mean, np.mean(np.asarray(x).reshape(-1, 6), 0), rtol=1e-12)


@pytest.mark.parametrize("use_bias", [True, False])
def test_pointwise_conv_is_a_dense_layer(use_bias):
  x = jax.random.normal(jax.random.PRNGKey(0), (10, 5))
  layer = PointwiseConv(7, use_bias, kernel_init=nn.initializers.normal(1.0))
  dense = nn.Dense(7, use_bias=use_bias, kernel_init=nn.initializers.normal(1.0))
  variables = layer.init(jax.random.PRNGKey(1), x)
  if use_bias:  # a non-zero bias, so that it is seen
    variables = jax.tree.map(lambda a: a + 0.5, variables)
  chex.assert_trees_all_equal(
    variables, jax.tree.map(lambda a: a + 0.5 * use_bias, dense.init(jax.random.PRNGKey(1), x))
  )
  chex.assert_trees_all_close(
    layer.apply(variables, x), dense.apply(variables, x), rtol=1e-6, atol=1e-6
  )
  out16 = PointwiseConv(7, use_bias, dtype=jnp.bfloat16).apply(variables, x)
  chex.assert_type(out16, jnp.bfloat16)


@pytest.mark.parametrize(
  "shape,kernel_size,stride",
  [((2, 9, 7, 3), 3, 1), ((2, 9, 7, 3), 3, 2), ((1, 8, 11, 4), 5, 2), ((1, 6, 5, 2), 7, 1)],
)
def test_conv_nhwc_matches_lax_values_and_gradients(x64, shape, kernel_size, stride):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], shape, jnp.float64)
  kernel = jax.random.normal(keys[1], (kernel_size, kernel_size, shape[-1], 5), jnp.float64)
  pad = ((kernel_size // 2,) * 2,) * 2
  ours = lambda x, kernel: conv_nhwc(x, kernel, stride, pad)
  out, vjp = jax.vjp(ours, x, kernel)
  want, want_vjp = jax.vjp(
    lambda x, kernel: jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")
    ),
    x,
    kernel,
  )
  cotangent = jax.random.normal(keys[2], out.shape, jnp.float64)
  np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
  for grad, want_grad in zip(vjp(cotangent), want_vjp(cotangent)):
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-12)
  check_grads(ours, (x, kernel), order=2, modes=("rev",))


def test_conv_nhwc_kernel_gradient_by_taps_on_cpu_only():
  """Cross-lowered: matmuls per tap for CPU; XLA's convolution (cuDNN's) for GPUs and TPUs."""
  grads = jax.jit(
    jax.grad(lambda x, kernel: conv_nhwc(x, kernel, 1, ((1, 1), (1, 1))).sum(), argnums=(0, 1))
  )
  traced = grads.trace(jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 5)))
  convolutions = {
    platform: traced.lower(lowering_platforms=(platform,)).as_text().count("stablehlo.convolution")
    for platform in ("cpu", "cuda", "tpu")
  }
  assert convolutions == {"cpu": 1, "cuda": 2, "tpu": 2}  # input gradient (+ kernel gradient)


def test_conv_module_is_flax_conv_with_bfloat16_gradients():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  module = ConvModule(6, kernel_size=3, stride=2, norm=False, act=False)
  flax_conv = nn.Conv(6, (3, 3), (2, 2), padding=((1, 1), (1, 1)), use_bias=True)
  variables = module.init(jax.random.PRNGKey(1), x, train=False)
  variables = jax.tree.map(lambda a: a + 0.5, variables)  # a non-zero bias
  chex.assert_trees_all_equal_shapes(
    variables["params"]["conv"], flax_conv.init(jax.random.PRNGKey(1), x)["params"]
  )
  np.testing.assert_allclose(
    module.apply(variables, x, train=False),
    flax_conv.apply({"params": variables["params"]["conv"]}, x),
    rtol=1e-6,
    atol=1e-6,
  )
  module16 = ConvModule(
    6, kernel_size=3, norm=False, act=False, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16
  )
  params16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), variables["params"])
  grads = jax.grad(
    lambda p: module16.apply({"params": p}, x, train=False).astype(jnp.float32).sum()
  )(params16)
  chex.assert_trees_all_equal_dtypes(grads, params16)


def test_bfloat16_layer():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 32))
  layer32 = Involution(kernel_size=3, group_channels=8)
  layer16 = Involution(kernel_size=3, group_channels=8, dtype=jnp.bfloat16)
  variables = layer32.init(jax.random.PRNGKey(0), x, train=False)
  out16 = layer16.apply(variables, x.astype(jnp.bfloat16), train=False)
  out32 = layer32.apply(variables, x, train=False)
  chex.assert_type(out16, jnp.bfloat16)
  chex.assert_trees_all_equal_dtypes(variables, layer16.init(jax.random.PRNGKey(0), x, train=False))
  np.testing.assert_allclose(np.float32(out16), out32, rtol=5e-2, atol=5e-2)


def test_kernel_is_sown():
  layer = Involution(kernel_size=3, stride=2, group_channels=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
  variables = layer.init(jax.random.PRNGKey(0), x, train=False)
  _, state = layer.apply(variables, x, train=False, mutable=["intermediates"])
  (kernel,) = state["intermediates"]["kernel"]
  chex.assert_shape(kernel, (2, 4, 4, 2, 3, 3))


@pytest.mark.parametrize(
  "kwargs,x_shape,message",
  [
    (dict(group_channels=16), (1, 8, 8, 24), "C=24 must be divisible by group_channels=16"),
    (dict(kernel_size=4), (1, 8, 8, 16), "kernel_size must be odd"),
    (dict(stride=0), (1, 8, 8, 16), "stride must be >= 1"),
    (dict(reduction_ratio=0), (1, 8, 8, 16), "reduction_ratio must be in"),
    (dict(), (8, 16), "rank 3, 4 or 5"),
  ],
)
def test_layer_errors(kwargs, x_shape, message):
  with pytest.raises(ValueError, match=message):
    Involution(**kwargs).init(jax.random.PRNGKey(0), jnp.ones(x_shape), train=False)


def test_layer_norm_of_close_channels_matches_float64():
  """A kernel's reduce step normalises a few channels that can be nearly equal: the
  two-pass variance keeps float32 close to float64 where E[x^2] - E[x]^2 cancels."""
  module = ConvModule(2, kernel_size=1, norm="layer", act=False)
  rng = np.random.default_rng(0)
  x = np.stack([2 + 0.1 * rng.normal(size=64), rng.normal(size=64)], -1).astype(np.float32)
  kernel = np.array([[1.0, 1.0], [0.0, 0.01]], np.float32)  # channels x0 and x0 + x1 / 100
  variables = module.init(jax.random.PRNGKey(1), jnp.asarray(x), train=False)
  variables = {"params": dict(variables["params"], conv={"kernel": jnp.asarray(kernel)})}
  got = module.apply(variables, jnp.asarray(x), train=False)
  h = x.astype(np.float64) @ kernel.astype(np.float64)
  centred = h - h.mean(-1, keepdims=True)
  want = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
