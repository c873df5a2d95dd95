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
