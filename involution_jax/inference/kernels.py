"""The kernels involution generates for an image: captured, and drawn as a picture
(`involution-visualize`).

Top row: the image the model saw, then per chosen group the generated kernel
summed over its K x K window at every output position, as a heatmap over the
image (the paper's figure; for softmax-normalised kernels, whose sums are all 1,
their largest tap). Bottom row: the K x K kernel itself (first chosen
group) at chosen pixels, marked on the image. Kernels are captured from the
model's own forward pass (the layers sow them), not recomputed. A Mask R-CNN's
mask-head layers work on each detection's 14 x 14 RoI: their heatmaps lie over
that detection's box.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import traverse_util

PANEL_INCHES, DPI = 2.5, 100


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


def _overlay(ax, image, heat, title, extent):
  ax.imshow(image)
  ax.imshow(heat, cmap="jet", alpha=0.5, extent=extent)
  ax.set_xlim(-0.5, image.shape[1] - 0.5)  # the whole image, even when the heat covers a box
  ax.set_ylim(image.shape[0] - 0.5, -0.5)
  ax.set_title(title, fontsize=8)
  ax.axis("off")


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

  image: (H, W, 3) in [0, 1]. Groups beyond G are dropped; pixels default to
  four spread over the output grid. region: the box (x1, y1, x2, y2), in image
  pixels, that the output grid covers (default the whole image; a RoI's box).
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ho, wo, g, k, _ = kernel.shape
  groups = [i for i in groups if 0 <= i < g] or [0]
  if pixels is None:
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
    2, cols, figsize=(cols * PANEL_INCHES, 2 * PANEL_INCHES), dpi=DPI, squeeze=False
  )
  for ax in axes.ravel():
    ax.axis("off")
  x1, y1, x2, y2 = region if region is not None else (0, 0, image.shape[1], image.shape[0])
  extent = (x1 - 0.5, x2 - 0.5, y2 - 0.5, y1 - 0.5)  # pixel centres at integers
  axes[0, 0].imshow(image)
  axes[0, 0].set_title(f"input {layer}", fontsize=8)
  heat, statistic = kernel_heat(kernel)  # (Ho, Wo, G)
  for col, group in enumerate(groups, start=1):
    _overlay(axes[0, col], image, heat[..., group], f"group {group}: {statistic}", extent)
  axes[1, 0].imshow(image)
  for col, (i, j) in enumerate(pixels, start=1):
    y = y1 + (i + 0.5) * (y2 - y1) / ho - 0.5
    x = x1 + (j + 0.5) * (x2 - x1) / wo - 0.5
    axes[1, 0].plot(x, y, "o", ms=6, mfc="none", mec="yellow")
    axes[1, 0].annotate(
      str(col), (x, y), xytext=(4, 4), textcoords="offset points", color="yellow", fontsize=8
    )
    ax = axes[1, col]
    taps = kernel[i, j, groups[0]]
    bound = float(np.abs(taps).max()) or 1.0
    ax.imshow(taps, cmap="RdBu_r", vmin=-bound, vmax=bound)  # red > 0, blue < 0
    ax.set_title(f"{col}: pixel ({i}, {j}), group {groups[0]}", fontsize=8)
  axes[1, 0].set_title("chosen pixels", fontsize=8)
  fig.tight_layout()
  fig.savefig(out_path, dpi=DPI)
  plt.close(fig)
  return cols * int(PANEL_INCHES * DPI), 2 * int(PANEL_INCHES * DPI)
