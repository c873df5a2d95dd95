"""The Involution layer in 1-D and 3-D: shapes, causality, normalised kernels, decoding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from involution_jax import Involution, involution


def _init_apply(layer, x, train=False, rngs=None):
  variables = layer.init(jax.random.PRNGKey(0), x, train=False)
  out, state = layer.apply(
    variables, x, train=train, mutable=["intermediates", "batch_stats"], rngs=rngs
  )
  return variables, out, state


@pytest.mark.parametrize(
  "x_shape, kwargs, out_shape, window",
  [
    ((2, 15, 16), dict(kernel_size=5, stride=2), (2, 8, 16), (5,)),
    ((2, 15, 16), dict(kernel_size=4, stride=2, padding="CAUSAL"), (2, 8, 16), (4,)),
    ((1, 5, 6, 7, 16), dict(kernel_size=3, stride=2), (1, 3, 3, 4, 16), (3, 3, 3)),
    ((1, 4, 6, 6, 16), dict(kernel_size=(1, 3, 3)), (1, 4, 6, 6, 16), (1, 3, 3)),
    ((2, 8, 9, 16), dict(kernel_size=(3, 5), dilation=(1, 2)), (2, 8, 9, 16), (3, 5)),
  ],
)
def test_shapes_and_the_sown_kernel(x_shape, kwargs, out_shape, window):
  layer = Involution(group_channels=8, reduction_ratio=2, **kwargs)
  x = jax.random.normal(jax.random.PRNGKey(1), x_shape)
  variables, out, state = _init_apply(layer, x)
  chex.assert_shape(out, out_shape)
  (kernel,) = state["intermediates"]["kernel"]
  chex.assert_shape(kernel, (*out_shape[:-1], 2, *window))
  norm = "ln" if kwargs.get("padding") == "CAUSAL" else "bn"
  assert set(variables["params"]["conv1"]) == {"conv", norm}
  # The layer applies the op to its own kernel: recompute the output from it.
  expected = involution(
    x,
    kernel,
    stride=kwargs.get("stride", 1),
    dilation=kwargs.get("dilation", 1),
    padding=kwargs.get("padding", "SAME"),
  )
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def _future_influence(layer, t_len, train, stride=1):
  """max |d out[t] / d x[t']| over t' > t * stride (inputs after output t's position)."""
  x = jax.random.normal(jax.random.PRNGKey(2), (2, t_len, 16))
  variables = layer.init(jax.random.PRNGKey(0), x, train=False)

  def forward(x):
    if train:
      out, _ = layer.apply(variables, x, train=True, mutable=["batch_stats"])
      return out
    return layer.apply(variables, x, train=False)

  jac = np.abs(np.asarray(jax.jacobian(forward)(x))).sum(axis=(0, 2, 3, 5))  # (T_out, T_in)
  future = [jac[t, t * stride + 1 :].max(initial=0.0) for t in range(jac.shape[0])]
  return max(future), jac


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_causal_layer_never_sees_the_future(x64, train, stride):
  causal = Involution(kernel_size=3, stride=stride, dilation=2, group_channels=8, padding="CAUSAL")
  future, jac = _future_influence(causal, 12, train, stride)
  assert future == 0.0 and jac.max() > 0
  same = Involution(kernel_size=3, stride=stride, dilation=2, group_channels=8)
  assert _future_influence(same, 12, train, stride)[0] > 0  # the test can tell


@pytest.mark.parametrize(
  "kernel_size, dilation, softmax",
  [
    (1, 1, False),
    (3, 1, True),
    (4, 2, False),
    (7, 3, True),
  ],
)
def test_decoding_step_by_step_equals_the_full_causal_pass(kernel_size, dilation, softmax):
  layer = Involution(
    kernel_size=kernel_size,
    dilation=dilation,
    group_channels=4,
    padding="CAUSAL",
    kernel_normalization="softmax" if softmax else None,
  )
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 11, 8))
  variables = layer.init(jax.random.PRNGKey(0), x, train=False)
  full = layer.apply(variables, x, train=False)
  decoder = layer.clone(decode=True)
  cache = decoder.init(jax.random.PRNGKey(0), x[:, :1], train=False)["cache"]
  chex.assert_shape(cache["inputs"], (2, (kernel_size - 1) * dilation, 8))
  step = jax.jit(
    lambda cache, x_t: decoder.apply(
      {**variables, "cache": cache}, x_t, train=False, mutable=["cache"]
    )
  )
  outputs = []
  for t in range(x.shape[1]):
    out, state = step(cache, x[:, t : t + 1])
    cache = state["cache"]
    outputs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), full, rtol=1e-5, atol=1e-5)


def test_softmax_kernels_sum_to_one_over_their_taps():
  layer = Involution(kernel_size=(3, 5), group_channels=8, kernel_normalization="softmax")
  _, _, state = _init_apply(layer, jax.random.normal(jax.random.PRNGKey(4), (1, 6, 6, 16)))
  (kernel,) = state["intermediates"]["kernel"]
  assert kernel.min() > 0
  np.testing.assert_allclose(kernel.sum(axis=(-1, -2)), 1.0, rtol=1e-5)


def test_kernel_dropout_only_in_train_mode():
  layer = Involution(kernel_size=3, group_channels=8, padding="CAUSAL", kernel_dropout=0.5)
  x = jax.random.normal(jax.random.PRNGKey(5), (2, 9, 16))
  variables = layer.init(jax.random.PRNGKey(0), x, train=False)
  run = lambda seed: layer.apply(
    variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(seed)}, mutable=["intermediates"]
  )[1]["intermediates"]["kernel"][0]
  dropped = run(0)
  kept = layer.apply(variables, x, train=False, mutable=["intermediates"])[1]
  kept = kept["intermediates"]["kernel"][0]
  zeros = np.mean(np.asarray(dropped) == 0)
  assert 0.3 < zeros < 0.7 and np.all(np.asarray(kept) != 0)
  np.testing.assert_array_equal(run(0), dropped)  # the same rng, the same taps
  kept_taps = np.asarray(dropped) != 0
  np.testing.assert_allclose(
    np.asarray(dropped)[kept_taps], 2 * np.asarray(kept)[kept_taps], rtol=1e-6
  )


@pytest.mark.parametrize(
  "kwargs, x_shape, message",
  [
    (dict(kernel_size=3, decode=True), (1, 8, 16), "decode needs padding='CAUSAL' and stride 1"),
    (dict(kernel_size=3, padding="CAUSAL", stride=2, decode=True), (1, 8, 16), "stride 1"),
    (dict(kernel_size=3, padding="CAUSAL"), (1, 8, 8, 16), "'CAUSAL' is for 1-D"),
    (dict(kernel_size=(3, 3)), (1, 8, 16), r"kernel_size must be >= 1 \(an int, or 1 ints"),
    (dict(kernel_size=3, norm="group"), (1, 8, 16), "unknown norm 'group'"),
    (dict(kernel_size=3, kernel_normalization="l1"), (1, 8, 16), "'softmax', got 'l1'"),
    (dict(kernel_size=3, kernel_dropout=1.0), (1, 8, 16), r"kernel_dropout must be in \[0, 1\)"),
    (dict(kernel_size=3, padding=((0, 0),)), (1, 8, 16), r"ceil\(size / stride\) = \(8,\)"),
  ],
)
def test_layer_errors(kwargs, x_shape, message):
  with pytest.raises(ValueError, match=message):
    Involution(group_channels=8, **kwargs).init(
      jax.random.PRNGKey(0), jnp.ones(x_shape), train=False
    )


def test_decoding_takes_one_step_at_a_time():
  layer = Involution(kernel_size=3, group_channels=8, padding="CAUSAL", decode=True)
  variables = layer.init(jax.random.PRNGKey(0), jnp.ones((1, 1, 16)), train=False)
  with pytest.raises(
    ValueError, match=r"one step at a time, x \(B, 1, C\); got shape \(1, 2, 16\)"
  ):
    layer.apply(variables, jnp.ones((1, 2, 16)), train=False, mutable=["cache"])
