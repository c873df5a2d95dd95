"""fairseq's DynamicConv language model by unfold, in PyTorch: the seq_bench baseline.

The same network as `SequenceModel(mixer="dynamic")`: embedding -> blocks of
[LayerNorm -> Linear(D -> 2D) -> GLU -> DynamicConv -> Linear(D)] and
[LayerNorm -> MLP] -> LayerNorm -> head, where DynamicConv is Wu et al.'s unfold
formulation (fairseq's `DynamicConv1dTBC` with `unfold=True`): pad K - 1 steps on
the left, a (B, T, D, K) view of the windows, times softmax-normalised per-head
kernels, summed over the taps. The product is the T x K x D tensor autograd keeps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DynamicConvUnfold(nn.Module):
  def __init__(self, width: int, kernel_size: int, heads: int):
    super().__init__()
    self.kernel_size, self.heads = kernel_size, heads
    self.kernel = nn.Linear(width, heads * kernel_size)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """x: (B, T, D) -> (B, T, D)."""
    b, t, d = x.shape
    k, h = self.kernel_size, self.heads
    weights = self.kernel(x).view(b, t, h, 1, k).softmax(dim=-1)
    windows = F.pad(x, (0, 0, k - 1, 0)).unfold(1, k, 1)  # (B, T, D, K), a view
    return (windows.reshape(b, t, h, d // h, k) * weights).sum(-1).reshape(b, t, d)


class DynamicConvLM(nn.Module):
  """Tokens (B, T) -> next-token logits (B, T, vocab)."""

  def __init__(self, width: int, kernel_sizes, heads: int, vocab: int = 256, mlp_ratio: int = 4):
    super().__init__()
    self.embed = nn.Embedding(vocab, width)
    self.blocks = nn.ModuleList()
    for k in kernel_sizes:
      self.blocks.append(
        nn.ModuleDict(
          dict(
            norm1=nn.LayerNorm(width),
            proj_in=nn.Linear(width, 2 * width),
            mixer=DynamicConvUnfold(width, k, heads),
            proj_out=nn.Linear(width, width),
            norm2=nn.LayerNorm(width),
            mlp=nn.Sequential(
              nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
            ),
          )
        )
      )
    self.norm = nn.LayerNorm(width)
    self.head = nn.Linear(width, vocab)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:
    x = self.embed(tokens)
    for block in self.blocks:
      h = F.glu(block["proj_in"](block["norm1"](x)), dim=-1)
      x = x + block["proj_out"](block["mixer"](h))
      x = x + block["mlp"](block["norm2"](x))
    return self.head(self.norm(x))


def gradient_step(width: int, kernel_sizes, heads: int, batch: int, length: int):
  """A closure computing the loss's gradients (no optimiser), like seq_bench's JAX step."""
  model = DynamicConvLM(width, kernel_sizes, heads)
  tokens = torch.zeros(batch, length, dtype=torch.long)

  def step():
    model.zero_grad(set_to_none=True)
    logits = model(tokens)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    loss.backward()
    return loss

  return step


def mixer_gradient_step(width: int, kernel_size: int, heads: int, batch: int, length: int):
  """A closure computing DynamicConvUnfold's input and weight gradients for a cotangent."""
  mixer = DynamicConvUnfold(width, kernel_size, heads)
  x = torch.randn(batch, length, width, requires_grad=True)
  cotangent = torch.randn(batch, length, width)

  def step():
    mixer.zero_grad(set_to_none=True)
    x.grad = None
    out = mixer(x)
    out.backward(cotangent)
    return x.grad

  return step
