"""RedNet architecture: parameter counts, shapes, initialisation, registry, summary."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from involution_jax import RedNet, create_model, rednet26, rednet50
from involution_jax.models.rednet import count_params
from involution_jax.weights.summary import summarize
from involution_jax.weights.zoo import REGISTRY

# Official parameter counts (1000 classes; shared/reference/rednet.md).
OFFICIAL = {26: 9_233_166, 38: 12_386_986, 50: 15_540_806, 101: 25_652_950, 152: 33_984_582}
BACKBONE = {26: 7_184_166, 38: 10_337_986, 50: 13_491_806, 101: 23_603_950, 152: 31_935_582}


def shapes(model, size=(64, 64)):
  return jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *size, 3)), train=False)
  )


@pytest.mark.parametrize("depth", sorted(OFFICIAL))
def test_parameter_counts_equal_official(depth):
  assert count_params(shapes(create_model(f"rednet{depth}"))["params"]) == OFFICIAL[depth]
  assert count_params(shapes(RedNet(depth, num_classes=0))["params"]) == BACKBONE[depth]
  # The det/seg backbones' kernel-7 stem involution adds 720 parameters.
  assert count_params(shapes(RedNet(depth, stem_kernel_size=7))["params"]) == OFFICIAL[depth] + 720


@pytest.fixture(scope="module")
def rednet26_backbone():
  """RedNet-26's stages and random variables (their shapes do not depend on the input's)."""
  model = rednet26(features_only=True)
  x = jnp.zeros((1, 32, 32, 3))
  return model, jax.jit(model.init, static_argnames="train")(jax.random.PRNGKey(1), x, train=False)


# Over 20 s: a RedNet forward compiles per stage layout and size.
@pytest.mark.parametrize(
  "size,stages",
  [
    ((224, 224), [(56, 56), (28, 28), (14, 14), (7, 7)]),
    ((225, 225), [(57, 57), (29, 29), (15, 15), (8, 8)]),
    ((97, 131), [(25, 33), (13, 17), (7, 9), (4, 5)]),
  ],
)
def test_backbone_stages_and_odd_sizes(size, stages, rednet26_backbone):
  model, variables = rednet26_backbone
  x = jax.random.normal(jax.random.PRNGKey(0), (2, *size, 3))
  outs = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert len(outs) == 4
  for out, hw, channels in zip(outs, stages, (256, 512, 1024, 2048)):
    chex.assert_shape(out, (2, *hw, channels))
    chex.assert_tree_all_finite(out)


def test_head_and_headless_outputs():
  # Shapes and dtypes only: traced, not compiled (RedNet-26 runs in the tests above).
  x = jnp.ones((3, 32, 32, 3))
  for model, shape in ((rednet26(num_classes=10), (3, 10)), (rednet26(num_classes=0), (3, 2048))):
    out = jax.eval_shape(
      lambda x: model.apply(model.init(jax.random.PRNGKey(0), x, train=False), x, train=False), x
    )
    chex.assert_shape(out, shape)
    chex.assert_type(out, jnp.float32)


def test_small_configuration_fields():
  model = RedNet(
    stage_sizes=(1, 1),
    stem_width=16,
    base_width=8,
    kernel_size=3,
    group_channels=8,
    stem_pool=False,
    num_classes=10,
  )
  x = jnp.ones((2, 16, 16, 3))
  shapes_ = jax.tree.map(jnp.shape, shapes(model, (16, 16))["params"])
  assert set(shapes_) == {"stem_0", "stem_1", "stem_2", "stem_4", "layer1_0", "layer2_0", "fc"}
  assert shapes_["layer2_0"]["conv2"]["conv2"]["conv"]["kernel"] == (4, 9 * 2)
  out = jax.jit(
    lambda x: model.apply(
      model.init(jax.random.PRNGKey(0), x, train=False), x, train=True, mutable=["batch_stats"]
    )[0]
  )(x)
  chex.assert_shape(out, (2, 10))


def test_bfloat16_compute_float32_params():
  # Lowered, not compiled: the program shows what it computes in.
  model = rednet26(dtype=jnp.bfloat16, num_classes=5)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = shapes(model, (32, 32))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  chex.assert_type(jax.eval_shape(forward, variables, x), jnp.float32)
  products = re.findall(
    r"stablehlo.(?:convolution|dot_general).*", forward.lower(variables, x).as_text()
  )
  assert len(products) > 20 and all(p.endswith("xbf16>") for p in products)  # all in bf16


def test_initialisation_matches_official():
  model = rednet50()
  variables = jax.jit(model.init, static_argnames="train")(
    jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)), train=False
  )
  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  for path, value in flat.items():
    value = np.asarray(value)
    if path.endswith("bn3/scale"):
      np.testing.assert_array_equal(value, 0, err_msg=path)
    elif path.endswith("scale"):
      np.testing.assert_array_equal(value, 1, err_msg=path)
    elif path.endswith("bias"):
      np.testing.assert_array_equal(value, 0, err_msg=path)
    elif path == "fc/kernel":
      assert abs(value.std() - 0.01) < 0.0005
    elif value.size > 20000:  # conv kernels: Kaiming normal, fan_out, gain sqrt(2)
      fan_out = value.shape[-1] * (value.shape[0] * value.shape[1] if value.ndim == 4 else 1)
      np.testing.assert_allclose(value.std(), np.sqrt(2 / fan_out), rtol=0.05, err_msg=path)
      assert np.abs(value).max() > 2.5 * value.std(), f"{path} looks truncated"
  stats = traverse_util.flatten_dict(variables["batch_stats"], sep="/")
  assert all(np.all(np.asarray(v) == (0 if p.endswith("mean") else 1)) for p, v in stats.items())


def test_registry_and_errors():
  assert create_model("rednet38").depth == 38
  assert create_model("rednet50", num_classes=10).num_classes == 10
  with pytest.raises(ValueError, match="unknown model 'resnet50'; available: .*rednet26"):
    create_model("resnet50")
  with pytest.raises(ValueError, match="unknown RedNet depth 34"):
    RedNet(34).init(jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)), train=False)
  with pytest.raises(ValueError, match="rank 4"):
    rednet26().init(jax.random.PRNGKey(0), jnp.ones((32, 32, 3)), train=False)


def test_summary_matches_published_numbers():
  for row in summarize(depths=(26, 50)):
    depth = int(row["model"].split("-")[1])
    assert row["params"] == REGISTRY[f"rednet{depth}"].params == OFFICIAL[depth]
    assert abs(row["gmacs_diff_pct"]) < 5, row
    assert abs(row["gmacs"] / REGISTRY[f"rednet{depth}"].gmacs - 1) < 0.05
  assert rednet50().depth == 50


# Over 20 s: RedNet's gradient compiled once per rematerialisation policy.
def test_remat_policies_give_the_same_gradients():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 3))
  labels = jnp.arange(4) % 10

  fields = dict(stage_sizes=(1, 1), stem_width=16, base_width=16, kernel_size=3, group_channels=8)
  fields.update(stem_pool=False, num_classes=10)
  init = jax.jit(RedNet(**fields).init, static_argnames="train")
  variables = init(jax.random.PRNGKey(1), x, train=False)  # the same for every policy

  def grads(remat):
    model = RedNet(**fields, remat=remat)

    def loss(params):
      logits, _ = model.apply(
        {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
      )
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    return jax.jit(jax.grad(loss))(variables["params"])

  reference = grads("none")
  for remat in ("kernels", "blocks"):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads(remat), reference
    )
  with pytest.raises(ValueError, match="unknown remat 'all'"):
    grads("all")
