"""Pictures read without the text: kernel heatmaps state their colour scale in a colour bar,
shared by the panels compared; masks list their classes; box labels keep class and score
apart."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from involution_jax.inference import drawing
from involution_jax.inference import kernels as kernel_pictures


def _panels(fig, prefix: str) -> list:
  """The images drawn in the panels whose titles start with prefix (the last: the heat)."""
  return [ax.images[-1] for ax in fig.axes if ax.get_title().startswith(prefix)]


def test_kernel_rows_share_one_symmetric_scale_that_a_labelled_colour_bar_states():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(6, 6, 3, 3, 3)) * np.array([0.1, 5.0, 1.0])[:, None, None]
  fig = kernel_pictures.kernel_figure(
    np.zeros((12, 12, 3)), kernel, groups=(0, 1), pixels=[(1, 1), (4, 4)]
  )
  try:
    heats, taps = _panels(fig, "group"), _panels(fig, "1:") + _panels(fig, "2:")
    assert len(heats) == 2 and len(taps) == 2
    for panels, values, label in [
      (heats, kernel[..., :2, :, :].sum(axis=(-1, -2)), "kernel weight: sum of K x K"),
      (taps, kernel[[1, 4], [1, 4], 0], "kernel weight (one tap)"),
    ]:
      bound = np.abs(values).max()  # of the panels shown: group 2 is not drawn
      for image in panels:
        np.testing.assert_allclose(image.get_clim(), (-bound, bound), rtol=1e-6)
      bars = [image.colorbar for image in panels if image.colorbar is not None]
      assert len(bars) == 1, "one colour bar per row"
      assert bars[0].ax.get_ylabel() == label
      assert bars[0].ax in fig.axes
  finally:
    plt.close(fig)


def test_a_mask_drawing_names_the_classes_it_shows_in_a_legend():
  image = np.full((40, 30, 3), 40, np.uint8)
  mask = np.zeros((40, 30), np.uint8)
  mask[5:10, 5:10], mask[32:, :4] = 2, 255  # class 1 absent; 255 unlabelled
  names = ("background", "road", "car")
  colours = drawing.palette(3)
  entries = drawing.legend_entries(mask, 3, names)
  assert entries == [("background", tuple(colours[0])), ("car", tuple(colours[2]))]
  assert [label for label, _ in drawing.legend_entries(mask, 3)] == ["class 0", "class 2"]

  drawn = drawing.overlay_mask(image, mask, 3, class_names=names)
  assert drawn.shape[0] == 40 and drawn.shape[1] > 30  # the legend: a strip on the right
  np.testing.assert_array_equal(drawn[32:, :4], image[32:, :4])  # unlabelled: untouched
  legend = drawn[:, 30:]
  for row, (_, colour) in enumerate(entries):
    band = legend[drawing.MARGIN + row * drawing.LEGEND_ROW :][: drawing.LEGEND_ROW]
    assert (band == colour).all(-1).sum() >= 4 * 4, f"no swatch of {colour} in row {row}"
    text = band[:, drawing.SWATCH + 2 * drawing.MARGIN :]
    assert (text < 128).all(-1).any(), f"no label in row {row}"
  assert not (legend == colours[1]).all(-1).any()  # no entry for the absent class


def test_box_labels_keep_class_and_score_apart():
  assert drawing.box_label({"class": "1", "index": 1, "score": 0.81}) == "class 1: 0.81"
  assert drawing.box_label({"class": "person", "index": 0, "score": 0.805}) == "person: 0.81"
  assert drawing.class_label(None, 3) == "class 3"
  image = np.zeros((60, 80, 3), np.uint8)
  box = {"class": "1", "index": 1, "score": 0.81, "box": (10.0, 30.0, 50.0, 55.0)}
  drawn = drawing.draw_boxes(image, [box])
  colour = drawing.palette(2)[1]
  tab = drawn[:30, 10:]  # above the box: the label's tab in the class colour
  assert (tab == colour).all(-1).sum() > 100
  assert (tab[(tab != colour).any(-1)] != 0).any()  # and its text, in another colour


def test_a_class_keeps_its_colour_whatever_the_number_of_classes():
  np.testing.assert_array_equal(drawing.palette(3), drawing.palette(11)[:3])
  assert len({tuple(c) for c in drawing.palette(20)}) == 20
