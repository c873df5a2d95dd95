"""Semantic FPN: sizes, loss, confusion matrix and mIoU, FPN necks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from involution_jax.models import fpn, segmentation
from involution_jax.models.rednet import count_params


def test_miou_on_a_hand_worked_example():
  labels = np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]]])
  predicted = np.array([[[0, 1, 1, 1], [0, 0, 1, 2], [2, 0, 0, 1]]])
  logits = jax.nn.one_hot(predicted, 4) * 10  # class 3 never occurs anywhere
  matrix = np.asarray(segmentation.confusion_matrix(logits, jnp.asarray(labels), 4))
  # rows: true, columns: predicted; ignored pixels left out.
  np.testing.assert_array_equal(matrix, [[3, 1, 0, 0], [0, 3, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
  results = segmentation.iou_from_confusion(matrix)
  # IoU0 = 3 / (4 + 4 - 3), IoU1 = 3 / (4 + 4 - 3), IoU2 = 1 / (2 + 2 - 1); class 3 NaN.
  np.testing.assert_allclose(results["iou"][:3], [3 / 5, 3 / 5, 1 / 3])
  assert np.isnan(results["iou"][3])
  assert results["miou"] == pytest.approx((3 / 5 + 3 / 5 + 1 / 3) / 3)
  assert results["pixel_accuracy"] == pytest.approx(7 / 10)


def test_loss_ignores_label_255_and_upsamples_logits():
  labels = jnp.array([[[0, 1], [255, 1]]])
  logits = jnp.zeros((1, 1, 1, 3)).at[..., 1].set(2.0)  # 1 x 1, upsampled to 2 x 2
  expected = np.mean(
    [
      -np.log(np.exp(0) / (2 + np.exp(2))),
      -np.log(np.exp(2) / (2 + np.exp(2))),
      -np.log(np.exp(2) / (2 + np.exp(2))),
    ]
  )
  assert float(segmentation.segmentation_loss(logits, labels)) == pytest.approx(expected, rel=1e-5)


def test_bilinear_resize_matches_pytorch_align_corners_false(torch):
  x = np.random.default_rng(0).normal(size=(1, 5, 7, 2)).astype(np.float32)
  want = torch.nn.functional.interpolate(
    torch.from_numpy(x).permute(0, 3, 1, 2), size=(10, 14), mode="bilinear", align_corners=False
  )
  np.testing.assert_allclose(
    segmentation.resize_bilinear(jnp.asarray(x), (10, 14)),
    want.permute(0, 2, 3, 1).numpy(),
    rtol=1e-5,
    atol=1e-5,
  )
  nearest = torch.nn.functional.interpolate(
    torch.from_numpy(x).permute(0, 3, 1, 2), size=(11, 13), mode="nearest"
  )
  np.testing.assert_array_equal(
    fpn.resize_nearest(jnp.asarray(x), (11, 13)), nearest.permute(0, 2, 3, 1).numpy()
  )


def test_published_parameter_counts():
  def params(neck):
    model = segmentation.SemanticFPN(19, neck=neck)
    return count_params(
      jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False)
      )["params"]
    )

  # Published: 18.5M (conv neck), 16.4M (involution neck).
  assert params("conv") == 18_463_169 and abs(params("conv") - 18.5e6) < 0.1e6
  assert params("involution") == 16_372_737 and abs(params("involution") - 16.4e6) < 0.1e6


# Over 20 s: Semantic FPN's init, eval and train forward compile.
@pytest.mark.parametrize("neck", ["conv", "involution"])
def test_small_model_shapes_odd_sizes_and_train_mode(neck):
  model = segmentation.SemanticFPN(
    5,
    neck=neck,
    neck_channels=32,
    head_channels=16,
    backbone=dict(
      stage_sizes=(1, 1, 1, 1), base_width=8, stem_width=16, group_channels=8, kernel_size=3
    ),
  )
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 70, 90, 3))
  variables = jax.jit(model.init, static_argnames="train")(jax.random.PRNGKey(0), x, train=False)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  chex.assert_shape(logits, (2, 18, 23, 5))  # the finest pyramid level, 1/4
  names = set(variables["params"]["neck"])
  assert {"lateral_convs_0", "fpn_convs_3"} <= names
  inner = variables["params"]["neck"]["fpn_convs_0"]
  assert ("conv2" in inner) == (neck == "involution")
  out, updates = jax.jit(
    lambda v, x, r: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": r})
  )(variables, x, jax.random.PRNGKey(1))
  chex.assert_tree_all_finite(out)


def test_fpn_rejects_bad_configuration():
  features = [jnp.zeros((1, 8, 8, 4)), jnp.zeros((1, 4, 4, 8))]
  with pytest.raises(ValueError, match="unknown FPN neck 'mlp'"):
    fpn.FPN(8, neck="mlp").init(jax.random.PRNGKey(0), features, train=False)
  with pytest.raises(ValueError, match="need 1 <= used levels <= num_outs"):
    fpn.FPN(8, num_outs=1).init(jax.random.PRNGKey(0), features, train=False)
