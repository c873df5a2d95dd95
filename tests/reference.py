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
