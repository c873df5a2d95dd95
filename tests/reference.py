"""Independent float64 NumPy references, written from the definitions."""

import numpy as np


def involution_reference(x, kernel, stride=1, dilation=1):
  """out[b,i,j,c] = sum_uv kernel[b,i,j,c // (C//G),u,v] * x[b, i*s+(u-K//2)*d, j*s+(v-K//2)*d, c].

  Zero outside the image. x: (B, H, W, C), kernel: (B, Ho, Wo, G, K, K).
  """
  x = np.asarray(x, np.float64)
  kernel = np.asarray(kernel, np.float64)
  b, h, w, c = x.shape
  _, ho, wo, g, k, _ = kernel.shape
  group_of_channel = np.arange(c) // (c // g)
  out = np.zeros((b, ho, wo, c))
  for u in range(k):
    for v in range(k):
      rows = np.arange(ho) * stride + (u - k // 2) * dilation
      cols = np.arange(wo) * stride + (v - k // 2) * dilation
      valid = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
      picked = x[:, np.clip(rows, 0, h - 1)][:, :, np.clip(cols, 0, w - 1)]
      picked = picked * valid[None, :, :, None]
      out += picked * kernel[:, :, :, group_of_channel, u, v]
  return out


def involution_reference_nd(x, kernel, stride, dilation, padding):
  """out[b, o, c] = sum_t kernel[b, o, c // (C//G), t] * x[b, o*s + t*d - low, c], N-D.

  Zero outside the input. x: (B, *S, C), kernel: (B, *O, G, *W); stride, dilation:
  N ints; padding: N (low, high) pairs (only `low` places the taps).
  """
  x = np.asarray(x, np.float64)
  kernel = np.asarray(kernel, np.float64)
  n = x.ndim - 2
  spatial, c = x.shape[1:-1], x.shape[-1]
  out_shape, g, window = kernel.shape[1 : n + 1], kernel.shape[n + 1], kernel.shape[n + 2 :]
  group_of_channel = np.arange(c) // (c // g)
  out = np.zeros((x.shape[0], *out_shape, c))
  for tap in np.ndindex(*window):
    picked = x
    valid = np.ones(out_shape, bool)
    for axis in range(n):
      positions = (
        np.arange(out_shape[axis]) * stride[axis] + tap[axis] * dilation[axis] - padding[axis][0]
      )
      inside = (positions >= 0) & (positions < spatial[axis])
      picked = np.take(picked, np.clip(positions, 0, spatial[axis] - 1), axis=axis + 1)
      shape = [1] * n
      shape[axis] = -1
      valid = valid & inside.reshape(shape)
    weights = kernel[(slice(None),) * (n + 1) + (group_of_channel,) + tuple(tap)]
    out += picked * valid[None, ..., None] * weights
  return out


def _bilinear_reference(feature, y, x):
  """torchvision's roi_align bilinear tap: feature (H, W, C) at (y, x), 0 outside [-1, size]."""
  height, width = feature.shape[:2]
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return np.zeros(feature.shape[-1])
  y, x = max(y, 0.0), max(x, 0.0)
  y_low, x_low = int(y), int(x)
  if y_low >= height - 1:
    y_low = y_high = height - 1
    y = float(y_low)
  else:
    y_high = y_low + 1
  if x_low >= width - 1:
    x_low = x_high = width - 1
    x = float(x_low)
  else:
    x_high = x_low + 1
  ly, lx = y - y_low, x - x_low
  return (
    (1 - ly) * (1 - lx) * feature[y_low, x_low]
    + (1 - ly) * lx * feature[y_low, x_high]
    + ly * (1 - lx) * feature[y_high, x_low]
    + ly * lx * feature[y_high, x_high]
  )


def roi_align_reference(feature, box, spatial_scale, output_size, sampling_ratio):
  """torchvision.ops.roi_align(aligned=True) for one (H, W, C) map and one box, float64."""
  feature = np.asarray(feature, np.float64)
  x1, y1, x2, y2 = (float(v) * spatial_scale - 0.5 for v in box)
  bin_h, bin_w = (y2 - y1) / output_size, (x2 - x1) / output_size
  out = np.zeros((output_size, output_size, feature.shape[-1]))
  for ph in range(output_size):
    for pw in range(output_size):
      for iy in range(sampling_ratio):
        y = y1 + ph * bin_h + (iy + 0.5) * bin_h / sampling_ratio
        for ix in range(sampling_ratio):
          x = x1 + pw * bin_w + (ix + 0.5) * bin_w / sampling_ratio
          out[ph, pw] += _bilinear_reference(feature, y, x)
  return out / sampling_ratio**2
