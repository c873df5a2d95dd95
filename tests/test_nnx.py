"""The NNX modules against the linen ones they wrap: same variables, same outputs, same
BatchNorm updates; an nnx.Optimizer loop; checkpoints and converted weights loading."""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from involution_jax import models
from involution_jax import nnx as inv_nnx
from involution_jax.weights import model_from_info

SMALL = dict(stage_sizes=(1, 1), stem_width=32, base_width=16, stem_pool=False, num_classes=10)


CALL = nnx.jit(lambda model, x: model(x))


def _perturbed(variables, seed=0):
  """Non-trivial values everywhere (positive variances), so every variable matters."""
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(
    tree,
    [leaf + 0.2 * jnp.abs(jax.random.normal(k, leaf.shape)) for k, leaf in zip(keys, leaves)],
  )


def _close(a, b, tol=1e-5):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


def _images(batch=4, size=16, seed=1):
  return jax.random.normal(jax.random.PRNGKey(seed), (batch, size, size, 3))


# Over 20 s: RedNet compiled in Linen and in NNX, in both modes.
def test_rednet_eval_and_train_match_linen_and_update_statistics_alike():
  linen = models.RedNet(**SMALL)
  x = _images()
  variables = _perturbed(
    jax.jit(linen.init, static_argnames="train")(jax.random.PRNGKey(0), x, train=False)
  )
  model = inv_nnx.RedNet(rngs=nnx.Rngs(0), **SMALL)
  assert not model.use_running_average  # train mode after construction, as nnx.BatchNorm
  chex_shapes = jax.tree.map(jnp.shape, inv_nnx.linen_variables(model))
  assert chex_shapes == jax.tree.map(jnp.shape, variables)
  inv_nnx.set_variables(model, variables)
  _close(inv_nnx.linen_variables(model), variables, tol=0)

  apply = jax.jit(linen.apply, static_argnames=("train", "mutable"))
  want, updates = apply(variables, x, train=True, mutable=("batch_stats",))
  _close(CALL(model, x), want)
  _close(inv_nnx.linen_variables(model)["batch_stats"], updates["batch_stats"])
  _close(inv_nnx.linen_variables(model)["params"], variables["params"], tol=0)

  model.eval()
  assert model.use_running_average
  before = inv_nnx.linen_variables(model)
  _close(CALL(model, x), apply(dict(variables, **updates), x, train=False))
  _close(inv_nnx.linen_variables(model), before, tol=0)  # eval mode changes nothing
  model.train()
  assert not model.use_running_average


@pytest.mark.parametrize(
  "fields, spatial",
  [
    (dict(kernel_size=(5,), padding="CAUSAL", kernel_normalization="softmax"), (12,)),
    (dict(kernel_size=(3, 3, 3), stride=2), (5, 6, 7)),
    (dict(kernel_size=7), (9, 9)),
  ],
)
def test_involution_layer_matches_linen(fields, spatial):
  x = jax.random.normal(jax.random.PRNGKey(2), (2, *spatial, 32))
  model = inv_nnx.Involution(32, rngs=nnx.Rngs(3), group_channels=8, **fields)
  linen = models.Involution(group_channels=8, **fields)
  variables = _perturbed(inv_nnx.linen_variables(model))
  inv_nnx.set_variables(model, variables)
  for train in (False, True):
    want = linen.apply(variables, x, train=train, mutable=["batch_stats"] if train else False)
    want = want[0] if train else want
    _close(model(x, train=train), want)


# Over 20 s: a dense model compiled in Linen and in NNX.
def test_dense_model_matches_linen():
  kwargs = dict(helpers.load_config("digitscenes_seg").model_kwargs.to_dict(), dropout=0.0)
  model = inv_nnx.create_model("semantic_fpn", num_classes=4, rngs=nnx.Rngs(0), **kwargs)
  linen = models.create_model("semantic_fpn", num_classes=4, **kwargs)
  variables = inv_nnx.linen_variables(model)
  x = _images(batch=2, size=64)
  model.eval()
  _close(CALL(model, x), jax.jit(linen.apply, static_argnames="train")(variables, x, train=False))


# Over 20 s: compiles an NNX train step and runs it until the loss falls.
def test_an_nnx_optimizer_loop_lowers_the_loss():
  model = inv_nnx.RedNet(rngs=nnx.Rngs(0), **SMALL)
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  x, labels = _images(batch=16), jnp.arange(16) % 10

  @nnx.jit
  def step(model, optimizer, x, labels):
    loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  before = inv_nnx.linen_variables(model)
  losses = [float(step(model, optimizer, x, labels)) for _ in range(12)]
  assert losses[-1] < 0.6 * losses[0], losses
  after = inv_nnx.linen_variables(model)
  for collection in ("params", "batch_stats"):  # both trained in place
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before[collection], after[collection])
    assert all(jax.tree.leaves(changed)), collection


# Over 20 s: a RedNet checkpoint written and loaded into NNX.
def test_checkpoints_load_in_eval_mode(tmp_path):
  _, variables, info = helpers.save_random_checkpoint(str(tmp_path / "ckpt"))
  model = inv_nnx.from_weights(str(tmp_path / "ckpt"))
  assert model.use_running_average
  x = _images(batch=3, size=8)
  want = jax.jit(model_from_info(info).apply, static_argnames="train")(variables, x, train=False)
  _close(CALL(model, x), want)


def test_converted_official_weights_load(torch, tmp_path):
  from torch_rednet import Classifier, randomise_

  official = randomise_(Classifier(26), seed=5).eval()
  torch.save(official.state_dict(), tmp_path / "rednet26.pth")
  model = inv_nnx.from_weights(str(tmp_path / "rednet26.pth"))
  x = np.array(_images(batch=2, size=64))
  with torch.no_grad():
    want = official(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  _close(CALL(model, x), want, tol=1e-4)


def test_variables_that_do_not_fit_are_refused_with_every_problem():
  model = inv_nnx.RedNet(rngs=nnx.Rngs(0), **SMALL)
  variables = jax.tree.map(np.asarray, inv_nnx.linen_variables(model))
  del variables["params"]["fc"]["bias"]
  variables["params"]["fc"]["kernel"] = np.zeros((3, 3))
  variables["params"]["extra"] = {"w": np.zeros(2)}
  with pytest.raises(
    ValueError,
    match=r"\(3 problems\): missing params/fc/bias; unexpected "
    r"params/extra/w; params/fc/kernel: shape \(3, 3\), expected \(\d+, 10\)",
  ):
    inv_nnx.set_variables(model, variables)
