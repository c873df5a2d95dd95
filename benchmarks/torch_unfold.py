"""The official involution aggregation (unfold formulation), re-created in PyTorch.

Used as the baseline by the benchmarks. Layout as the official code: NCHW input,
kernel (B, G, K*K, Ho, Wo).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def involution_unfold(x: torch.Tensor, kernel: torch.Tensor, kernel_size: int,
                      stride: int = 1, dilation: int = 1) -> torch.Tensor:
  """x: (B, C, H, W); kernel: (B, G, K*K, Ho, Wo) -> (B, C, Ho, Wo)."""
  b, c = x.shape[:2]
  _, groups, _, ho, wo = kernel.shape
  patches = F.unfold(x, kernel_size, dilation=dilation,
                     padding=dilation * (kernel_size // 2), stride=stride)
  patches = patches.view(b, groups, c // groups, kernel_size * kernel_size, ho, wo)
  return (kernel.unsqueeze(2) * patches).sum(dim=3).view(b, c, ho, wo)
