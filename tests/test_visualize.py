"""Kernel pictures: captured kernels are the layer's, the PNG is valid and sized."""

import jax
import numpy as np
import pytest
from helpers import save_random_checkpoint
from PIL import Image

from involution_jax.cli import visualize
from involution_jax.inference import kernels as kernel_pictures


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  path = tmp_path_factory.mktemp("ckpt")
  return (str(path), *save_random_checkpoint(str(path), image_size=16))


def test_captured_kernels_equal_the_layer_computed_directly(checkpoint):
  _, model, variables, _ = checkpoint
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  kernels = kernel_pictures.capture_kernels(model, variables, x)
  assert set(kernels) == {"stem_1", "layer1_0/conv2", "layer2_0/conv2", "layer3_0/conv2"}
  # stem_1's input is stem_0's output; its kernel is conv2(relu(bn(conv1(input)))).
  _, state = model.apply(
    variables, x, train=False, capture_intermediates=True, mutable=["intermediates"]
  )
  stem_out = np.asarray(state["intermediates"]["stem_0"]["__call__"][0], np.float64)
  params = variables["params"]["stem_1"]
  stats = variables["batch_stats"]["stem_1"]["conv1"]["bn"]
  bn = params["conv1"]["bn"]
  hidden = stem_out @ np.asarray(params["conv1"]["conv"]["kernel"], np.float64)
  hidden = (hidden - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * bn["scale"] + bn["bias"]
  kernel = np.maximum(hidden, 0) @ np.asarray(params["conv2"]["conv"]["kernel"], np.float64)
  kernel = (kernel + params["conv2"]["conv"]["bias"]).reshape(2, 8, 8, 2, 3, 3)
  np.testing.assert_allclose(kernels["stem_1"], kernel, rtol=1e-4, atol=1e-5)
  assert kernels["layer2_0/conv2"].shape == (2, 4, 4, 4, 3, 3)  # 16 -> 8 (stem) -> 4


def test_cli_writes_a_png_of_the_expected_size(checkpoint, tmp_path, capsys):
  path = checkpoint[0]
  image = tmp_path / "seven.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), np.uint8)).save(image)
  out = tmp_path / "kernels.png"
  assert (
    visualize.main(
      [
        "--weights",
        path,
        "--image",
        str(image),
        "--layer",
        "stem_1",
        "--out",
        str(out),
        "--groups",
        "0,1",
        "--pixels",
        "1,1",
        "6,2",
        "7,7",
      ]
    )
    == 0
  )
  with Image.open(out) as png:
    png.verify()
  with Image.open(out) as png:
    # 3 pixels + the input, 250 pixels each, and the colour bars' 80
    assert png.format == "PNG" and png.size == (4 * 250 + 80, 2 * 250)
  assert "stem_1" in capsys.readouterr().out
  assert visualize.main(["--weights", path, "--image", str(image), "--layer", "nope"]) == 1
  assert "involution layers: stem_1, layer1_0/conv2" in capsys.readouterr().err
  with pytest.raises(ValueError, match=r"pixel \(9, 0\) is outside the layer's 8 x 8 output"):
    kernel_pictures.plot_kernels(
      np.zeros((16, 16, 3)), np.zeros((8, 8, 2, 3, 3)), str(tmp_path / "x.png"), pixels=[(9, 0)]
    )


# Over 20 s: Mask R-CNN's init and forward compile, then twice more for main.
def test_mask_head_kernels_are_drawn_over_their_detection(tmp_path, capsys):
  from helpers import load_config

  config = load_config("digitscenes_rcnn", "mask_inv", num_train_scenes=4)
  path = str(tmp_path / "ckpt")
  model, variables, _ = save_random_checkpoint(path, config=config)
  image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), np.uint8)
  outputs, kernels = kernel_pictures.capture(
    model, variables, image[None].astype(np.float32) / 128 - 1
  )
  detections = config.model_kwargs.max_detections
  assert kernels["mask_head/convs_0"].shape == (detections, 14, 14, 4, 7, 7)  # one per RoI
  assert kernels["neck/fpn_convs_0"].shape[0] == 1
  Image.fromarray(image).save(tmp_path / "scene.png")
  flags = ["--weights", path, "--image", str(tmp_path / "scene.png"), "--layer"]
  out = tmp_path / "mask.png"
  assert visualize.main([*flags, "mask_head/convs_3", "--out", str(out), "--detection", "1"]) == 0
  assert "mask_head/convs_3 (detection 1: class" in capsys.readouterr().out
  with Image.open(out) as png:
    assert png.format == "PNG" and png.size == (5 * 250 + 80, 2 * 250)
  bad = ["--out", str(tmp_path / "none.png"), "--detection", "99"]
  assert visualize.main([*flags, "mask_head/convs_0", *bad]) == 1
  assert "--detection 99: the image has" in capsys.readouterr().err


def test_heat_is_the_sum_or_for_normalised_kernels_the_largest_tap():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(4, 5, 2, 3, 3))
  heat, statistic = kernel_pictures.kernel_heat(kernel)
  assert statistic == "sum of K x K"
  np.testing.assert_allclose(heat, kernel.reshape(4, 5, 2, 9).sum(-1))
  taps = np.exp(kernel.reshape(4, 5, 2, 9))
  softmax = (taps / taps.sum(-1, keepdims=True)).reshape(kernel.shape).astype(np.float32)
  heat, statistic = kernel_pictures.kernel_heat(softmax)
  assert statistic == "largest tap (every sum is 1)"
  np.testing.assert_array_equal(heat, softmax.reshape(4, 5, 2, 9).max(-1))
  assert np.ptp(heat) > 0.1  # unlike the sums, it tells positions apart
