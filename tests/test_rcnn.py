"""Faster / Mask R-CNN: published sizes of the six variants, heads, inference outputs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from involution_jax.models import create_model, rcnn
from involution_jax.models.rednet import count_params

SMALL = dict(
  backbone=dict(stage_sizes=(1, 1, 1, 1), stem_width=16, base_width=8, group_channels=8),
  neck_channels=32,
  fc_channels=64,
  test_proposals=50,
  max_detections=10,
)

# Published (the paper's detection table, mmdet counting trainable parameters: the
# stem and the first stage are frozen).
PUBLISHED = {
  ("faster_rcnn", "conv", "conv"): 31.6e6,
  ("faster_rcnn", "involution", "conv"): 29.5e6,
  ("faster_rcnn", "involution", "involution"): 29.0e6,
  ("mask_rcnn", "conv", "conv"): 34.2e6,
  ("mask_rcnn", "involution", "conv"): 32.2e6,
  ("mask_rcnn", "involution", "involution"): 29.5e6,
}


@pytest.mark.parametrize("name,neck,head", list(PUBLISHED))
def test_published_parameter_counts(name, neck, head):
  model = create_model(name, num_classes=80, neck=neck, head=head)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  params = shapes["params"]
  frozen = {k: v for k, v in params["backbone"].items() if k.startswith(("stem", "layer1_"))}
  assert count_params(frozen) == 139_086
  trainable = count_params(params) - count_params(frozen)
  assert abs(trainable - PUBLISHED[name, neck, head]) < 0.1e6, trainable
  assert ("mask_head" in params) == (name == "mask_rcnn")


def test_head_sizes():
  box = rcnn.BoxHead(80)
  shapes = jax.eval_shape(lambda: box.init(jax.random.PRNGKey(0), jnp.zeros((2, 5, 7, 7, 256))))
  # two FC 1024 on the flattened 7 x 7 x 256 RoI; 81 logits; 80 x 4 deltas.
  want = 12544 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 81 + 81 + 1024 * 320 + 320
  assert count_params(shapes["params"]) == want
  logits, deltas = jax.eval_shape(lambda v: box.apply(v, jnp.zeros((2, 5, 7, 7, 256))), shapes)
  chex.assert_shape([logits, deltas], [(2, 5, 81), (2, 5, 80, 4)])
  mask = rcnn.MaskHead(80)
  rois = jnp.zeros((2, 5, 14, 14, 256))
  shapes = jax.eval_shape(lambda: mask.init(jax.random.PRNGKey(0), rois, train=False))
  conv = 256 * 256 * 9 + 256
  assert count_params(shapes["params"]) == 4 * conv + 256 * 256 * 4 + 256 + 256 * 80 + 80
  out = jax.eval_shape(lambda v: mask.apply(v, rois, train=False), shapes)
  chex.assert_shape(out, (2, 5, 28, 28, 80))
  with pytest.raises(ValueError, match="unknown head 'mlp'"):
    rcnn.MaskHead(3, head="mlp").init(jax.random.PRNGKey(0), rois[:1, :1, :, :, :8], train=False)


@pytest.mark.parametrize("name,head", [("faster_rcnn", "conv"), ("mask_rcnn", "involution")])
def test_inference_outputs_are_fixed_size_and_consistent(name, head):
  model = create_model(name, num_classes=4, neck=head, head=head, score_threshold=0.0, **SMALL)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 48, 3))
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x))(x)
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  chex.assert_shape(
    [out["boxes"], out["scores"], out["classes"], out["valid"]],
    [(2, 10, 4), (2, 10), (2, 10), (2, 10)],
  )
  valid = np.asarray(out["valid"])
  assert valid.any()  # score threshold 0: an untrained model still detects
  boxes, classes = np.asarray(out["boxes"]), np.asarray(out["classes"])
  assert np.all((classes >= 0) == valid) and np.all(classes < 4)
  assert np.all(boxes[..., 0] >= 0) and np.all(boxes[..., 2] <= 48)
  assert np.all(boxes[..., 1] >= 0) and np.all(boxes[..., 3] <= 64)
  assert np.all(np.diff(np.where(valid, out["scores"], -1), axis=1) <= 1e-6)  # best first
  if name == "mask_rcnn":
    chex.assert_shape(out["masks"], (2, 10, 28, 28))
    assert np.all((out["masks"] >= 0) & (out["masks"] <= 1))
  else:
    assert "masks" not in out
