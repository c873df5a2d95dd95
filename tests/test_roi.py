"""Multi-level RoIAlign: torchvision's aligned formula in float64 NumPy, levels, gradients,
memory."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from reference import roi_align_reference

from involution_jax.models.roi import roi_align, roi_levels

STRIDES = (4, 8, 16, 32)


def _pyramid(rng, batch, size, channels, dtype=np.float32):
  return [
    rng.normal(size=(batch, -(-size[0] // s), -(-size[1] // s), channels)).astype(dtype)
    for s in STRIDES
  ]


def _boxes(rng, batch, rois, size):
  """Boxes for every level, some reaching past the image, one degenerate."""
  centre = rng.uniform(-8, [size[1] + 8, size[0] + 8], size=(batch, rois, 2))
  side = np.array([30.0, 150.0, 300.0, 600.0])[np.arange(rois) % 4]  # levels 0-3 in turn
  side = side * rng.uniform(0.85, 1.15, size=(batch, rois))
  aspect = np.exp(rng.uniform(-0.4, 0.4, size=(batch, rois)))
  extent = np.stack([side * aspect, side / aspect], axis=-1)
  boxes = np.concatenate([centre - extent / 2, centre + extent / 2], axis=-1)
  boxes[0, 0] = [10.0, 12.0, 10.0, 12.0]  # zero area
  return boxes.astype(np.float32)


def test_levels_by_mmdet_rule_on_hand_worked_boxes():
  sides = [10, 55, 56, 111, 112, 223, 224, 447, 448, 2000]
  boxes = jnp.array([[5.0, 5.0, 5.0 + s, 5.0 + s] for s in sides])
  # floor(log2(side / 56 + 1e-6)), clamped to [0, 3].
  assert roi_levels(boxes, 4).tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
  assert roi_levels(jnp.array([[0.0, 0.0, 56.0, 224.0]]), 4).tolist() == [1]  # sqrt(w h) = 112
  assert roi_levels(boxes, 2).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("output_size,ratio", [(7, 2), (14, 2), (3, 1), (5, 3)])
def test_matches_the_aligned_reference_on_every_level(output_size, ratio):
  rng = np.random.default_rng(output_size + ratio)
  size = (100, 76)
  features = _pyramid(rng, 2, size, 3)
  boxes = _boxes(rng, 2, 12, size)
  got = np.asarray(roi_align(features, jnp.asarray(boxes), STRIDES, output_size, ratio))
  chex.assert_shape(got, (2, 12, output_size, output_size, 3))
  levels = np.asarray(roi_levels(jnp.asarray(boxes), len(STRIDES)))
  assert len(set(levels.ravel())) == len(STRIDES)  # the test reaches every level
  for b in range(2):
    for r in range(12):
      level = levels[b, r]
      want = roi_align_reference(
        features[level][b], boxes[b, r], 1 / STRIDES[level], output_size, ratio
      )
      np.testing.assert_allclose(got[b, r], want, rtol=1e-5, atol=1e-5)


def test_explicit_levels_and_bad_arguments():
  rng = np.random.default_rng(1)
  features = _pyramid(rng, 1, (64, 64), 2)
  boxes = jnp.asarray(_boxes(rng, 1, 4, (64, 64)))
  on_two = roi_align(features, boxes, STRIDES, levels=jnp.full((1, 4), 2))
  want = roi_align_reference(features[2][0], boxes[0, 1], 1 / 16, 7, 2)
  np.testing.assert_allclose(on_two[0, 1], want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="4 feature levels but 3 strides"):
    roi_align(features, boxes, STRIDES[:3])
  with pytest.raises(ValueError, match="sampling_ratio=0: a fixed number of samples"):
    roi_align(features, boxes, STRIDES, sampling_ratio=0)


def test_gradients_reach_the_features_not_the_boxes():
  rng = np.random.default_rng(2)
  with jax.enable_x64():
    features = [jnp.asarray(f) for f in _pyramid(rng, 1, (40, 40), 2, np.float64)]
    boxes = jnp.asarray(_boxes(rng, 1, 6, (40, 40)), jnp.float64)
    check_grads(
      lambda *fs: roi_align(fs, boxes, STRIDES, 4, 2), features, order=2, modes=("fwd", "rev")
    )
    box_grad = jax.grad(lambda b: jnp.sum(roi_align(features, b, STRIDES, 4, 2) ** 2))(boxes)
    assert not np.any(np.asarray(box_grad))


def test_memory_does_not_grow_with_levels_times_rois():
  batch, rois, channels, size = 2, 512, 64, (256, 256)
  shapes = [
    jax.ShapeDtypeStruct((batch, -(-size[0] // s), -(-size[1] // s), channels), jnp.float32)
    for s in STRIDES
  ]
  boxes = jax.ShapeDtypeStruct((batch, rois, 4), jnp.float32)
  output = batch * rois * 7 * 7 * channels * 4
  table = sum(int(np.prod(s.shape)) for s in shapes) * 4
  forward = jax.jit(lambda f, b: roi_align(f, b, STRIDES)).lower(shapes, boxes).compile()
  backward = (
    jax.jit(jax.grad(lambda f, b: jnp.sum(roi_align(f, b, STRIDES) ** 2)))
    .lower(shapes, boxes)
    .compile()
  )
  # Computing every level for every box and selecting would hold 4 outputs at once.
  for compiled in (forward, backward):
    temporaries = compiled.memory_analysis().temp_size_in_bytes
    assert temporaries <= 3 * output + 2 * table, (temporaries, output, table)
