"""The kernels involution generates for an image: captured, and drawn as a picture
(`involution-visualize`).

Top row: the image the model saw, then per chosen group the generated kernel
summed over its K x K window at every output position, as a heatmap over the
image (the paper's figure; for softmax-normalised kernels, whose sums are all 1,
their largest tap). Bottom row: the K x K kernel itself (first chosen group) at
chosen pixels, marked on the image. Each row's panels share one colour scale,
symmetric around 0 (red positive, white 0, blue negative), that a colour bar at the
row's end states: a colour means the same weight in every panel of the row. Kernels
are captured from the model's own forward pass (the layers sow them), not
recomputed. A Mask R-CNN's mask-head layers work on each detection's 14 x 14 RoI:
their heatmaps lie over that detection's box.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import traverse_util

PANEL_INCHES, DPI = 2.5, 100
BAR_INCHES, BAR_WIDTH = 0.8, 0.08  # the colour bars' column: its inches, its width / a panel's


def capture(model, variables: dict, images) -> tuple[object, dict[str, np.ndarray]]:
  """The model's eval outputs for images (B, H, W, 3) and {layer path ("layer2_0/conv2"):
  kernel (N, Ho, Wo, G, K, K)} for every involution; N = B, or B x detections for a
  detector's mask head (its RoIs, image-major)."""
  names: list[str] = []  # filled while tracing: a jitted dict comes back key-sorted

  def forward(variables, images):
    outputs, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    sown = list(traverse_util.flatten_dict(state["intermediates"]).items())
    names[:] = ["/".join(p[:-1]) for p, _ in sown if p[-1] == "kernel"]
    return outputs, [v[0] for p, v in sown if p[-1] == "kernel"]

  # Compiled: a Mask R-CNN's forward took 44 s op by op and 9 s jitted; a RedNet-50's 15 and 4.5.
  outputs, captured = jax.jit(forward)(variables, images)
  kernels = {name: np.asarray(k) for name, k in zip(names, captured)}
  return outputs, kernels


def capture_kernels(model, variables: dict, images) -> dict[str, np.ndarray]:
  """{layer path: kernel (N, Ho, Wo, G, K, K)} of every involution (see `capture`)."""
  return capture(model, variables, images)[1]


def kernel_heat(kernel: np.ndarray) -> tuple[np.ndarray, str]:
  """kernel (..., K, K) -> (heat (...), what it is): each kernel's sum over its
  window (the paper's figure), or its largest tap where every sum is the same
  (softmax-normalised kernels sum to 1: the sum would say nothing)."""
  summed = kernel.sum(axis=(-1, -2))
  if summed.size and np.ptp(summed) <= 1e-4 * max(1.0, float(np.abs(summed).max())):
    return kernel.max(axis=(-1, -2)), f"largest tap (every sum is {summed.flat[0]:.3g})"
  return summed, "sum of K x K"


def _shared_scale(values: np.ndarray) -> dict:
  """imshow's colour arguments for panels compared on one scale: symmetric around 0
  (red > 0, white 0, blue < 0) from the largest |value| of them all."""
  bound = float(np.abs(values).max()) or 1.0
  return {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}


def _overlay(ax, image, heat, title, extent, scale):
  """The heat (Ho, Wo) over image (H, W, 3) within extent; returns the heat's AxesImage."""
  ax.imshow(image)
  shown = ax.imshow(heat, alpha=0.5, extent=extent, **scale)
  ax.set_xlim(-0.5, image.shape[1] - 0.5)  # the whole image, even when the heat covers a box
  ax.set_ylim(image.shape[0] - 0.5, -0.5)
  ax.set_title(title, fontsize=8)
  ax.axis("off")
  return shown


def _colour_bar(fig, shown, cax, label: str) -> None:
  bar = fig.colorbar(shown, cax=cax)
  bar.set_label(label, fontsize=8)
  bar.ax.tick_params(labelsize=7)


def kernel_figure(
  image: np.ndarray,
  kernel: np.ndarray,
  *,
  groups: Sequence[int] = (0, 1, 2, 3),
  pixels: Sequence[tuple[int, int]] | None = None,
  layer: str = "",
  region: Sequence[float] | None = None,
):
  """The matplotlib Figure of one image's kernels (Ho, Wo, G, K, K) (see `plot_kernels`).

  Each row has one colour scale, shared by its panels and drawn as a colour bar at its
  end: symmetric around 0 (red positive, blue negative), bounded by the largest |value|
  the row shows. Top: the heat (`kernel_heat`) of the chosen groups; bottom: the K x K
  weights of the first chosen group at the chosen pixels.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ho, wo, g, k, _ = kernel.shape
  groups = [i for i in groups if 0 <= i < g] or [0]
  if not pixels:
    pixels = [
      (ho // 4, wo // 4),
      (ho // 4, 3 * wo // 4),
      (3 * ho // 4, wo // 4),
      (3 * ho // 4, 3 * wo // 4),
    ]
  for i, j in pixels:
    if not (0 <= i < ho and 0 <= j < wo):
      raise ValueError(f"pixel ({i}, {j}) is outside the layer's {ho} x {wo} output")
  cols = max(len(groups), len(pixels)) + 1
  fig, axes = plt.subplots(
    2,
    cols + 1,
    figsize=(cols * PANEL_INCHES + BAR_INCHES, 2 * PANEL_INCHES),
    dpi=DPI,
    squeeze=False,
    gridspec_kw={"width_ratios": [1.0] * cols + [BAR_WIDTH]},
  )
  for ax in axes[:, :-1].ravel():
    ax.axis("off")
  x1, y1, x2, y2 = region if region is not None else (0, 0, image.shape[1], image.shape[0])
  extent = (x1 - 0.5, x2 - 0.5, y2 - 0.5, y1 - 0.5)  # pixel centres at integers
  axes[0, 0].imshow(image)
  axes[0, 0].set_title(f"input {layer}", fontsize=8)
  heat, statistic = kernel_heat(kernel)  # (Ho, Wo, G)
  scale = _shared_scale(heat[..., groups])
  for col, group in enumerate(groups, start=1):
    shown = _overlay(axes[0, col], image, heat[..., group], f"group {group}", extent, scale)
  _colour_bar(fig, shown, axes[0, -1], f"kernel weight: {statistic}")
  axes[1, 0].imshow(image)
  taps = np.stack([kernel[i, j, groups[0]] for i, j in pixels])  # (pixels, K, K)
  scale = _shared_scale(taps)
  for col, (i, j) in enumerate(pixels, start=1):
    y = y1 + (i + 0.5) * (y2 - y1) / ho - 0.5
    x = x1 + (j + 0.5) * (x2 - x1) / wo - 0.5
    axes[1, 0].plot(x, y, "o", ms=6, mfc="none", mec="yellow")
    axes[1, 0].annotate(
      str(col), (x, y), xytext=(4, 4), textcoords="offset points", color="yellow", fontsize=8
    )
    shown = axes[1, col].imshow(taps[col - 1], **scale)
    axes[1, col].set_title(f"{col}: pixel ({i}, {j}), group {groups[0]}", fontsize=8)
  _colour_bar(fig, shown, axes[1, -1], "kernel weight (one tap)")
  axes[1, 0].set_title("chosen pixels", fontsize=8)
  fig.tight_layout()
  return fig


def plot_kernels(
  image: np.ndarray,
  kernel: np.ndarray,
  out_path: str,
  *,
  groups: Sequence[int] = (0, 1, 2, 3),
  pixels: Sequence[tuple[int, int]] | None = None,
  layer: str = "",
  region: Sequence[float] | None = None,
) -> tuple[int, int]:
  """Draws one image's kernels (Ho, Wo, G, K, K) to a PNG; returns its (width, height).

  image: (H, W, 3) in [0, 1]. Groups beyond G are dropped; pixels: (i, j) on the output
  grid (none given: four spread over it). region: the box (x1, y1, x2, y2), in image
  pixels, that the output grid covers (default the whole image; a RoI's box). Each row's
  panels share one colour scale, symmetric around 0, that a colour bar states
  (`kernel_figure`).
  """
  import matplotlib.pyplot as plt

  fig = kernel_figure(image, kernel, groups=groups, pixels=pixels, layer=layer, region=region)
  fig.savefig(out_path, dpi=DPI)
  size = fig.canvas.get_width_height()
  plt.close(fig)
  return size
