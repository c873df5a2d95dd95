"""A PyTorch re-creation of the official RedNet (mmcls layout), for parity tests
and as the benchmarks' baseline.

Written from the architecture facts in shared/reference/rednet.md; its
`state_dict` keys and shapes are checked against the official key lists.
"""

import torch
import torch.nn.functional as F
from torch import nn

STAGE_SIZES = {
  26: (1, 2, 4, 1),
  38: (2, 3, 5, 2),
  50: (3, 4, 6, 3),
  101: (3, 4, 23, 3),
  152: (3, 8, 36, 3),
}


class ConvModule(nn.Module):
  """mmcv ConvModule: `conv` (bias only without norm), optional `bn`, optional ReLU."""

  def __init__(self, cin, cout, kernel_size, stride=1, norm=True, act=True):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, bias=not norm)
    self.bn = nn.BatchNorm2d(cout) if norm else None
    self.act = act

  def forward(self, x):
    x = self.conv(x)
    if self.bn is not None:
      x = self.bn(x)
    return torch.relu(x) if self.act else x


def involution_unfold(x, kernel, kernel_size, stride=1, dilation=1):
  """The official aggregation. x: (B, C, H, W); kernel: (B, G, K*K, Ho, Wo) -> (B, C, Ho, Wo)."""
  b, c = x.shape[:2]
  _, groups, _, ho, wo = kernel.shape
  patches = F.unfold(
    x, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2), stride=stride
  )
  patches = patches.view(b, groups, c // groups, kernel_size * kernel_size, ho, wo)
  return (kernel.unsqueeze(2) * patches).sum(dim=3).view(b, c, ho, wo)


class Involution(nn.Module):
  """The official layer: kernel generation, then the unfold aggregation."""

  def __init__(self, channels, kernel_size, stride):
    super().__init__()
    self.kernel_size, self.stride, self.channels = kernel_size, stride, channels
    self.group_channels = 16
    self.groups = channels // self.group_channels
    self.conv1 = ConvModule(channels, channels // 4, 1)
    self.conv2 = ConvModule(channels // 4, kernel_size**2 * self.groups, 1, norm=False, act=False)
    self.avgpool = nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity()

  def forward(self, x):
    weight = self.conv2(self.conv1(self.avgpool(x)))
    b, _, h, w = weight.shape
    weight = weight.view(b, self.groups, self.kernel_size**2, h, w)
    return involution_unfold(x, weight, self.kernel_size, self.stride)


class Bottleneck(nn.Module):
  def __init__(self, cin, mid, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(mid)
    self.conv2 = Involution(mid, 7, stride)
    self.bn2 = nn.BatchNorm2d(mid)
    self.conv3 = nn.Conv2d(mid, mid * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(mid * 4)
    self.downsample = None
    if stride != 1 or cin != mid * 4:
      self.downsample = nn.Sequential(
        nn.Conv2d(cin, mid * 4, 1, stride, bias=False), nn.BatchNorm2d(mid * 4)
      )

  def forward(self, x):
    out = torch.relu(self.bn1(self.conv1(x)))
    out = torch.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = x if self.downsample is None else self.downsample(x)
    return torch.relu(out + identity)


class Backbone(nn.Module):
  """`depth`: 26, 38, 50, 101 or 152, or the blocks per stage (4 ints)."""

  def __init__(self, depth, stem_kernel_size=3):
    super().__init__()
    self.stem = nn.Sequential(
      ConvModule(3, 32, 3, 2),
      Involution(32, stem_kernel_size, 1),
      nn.BatchNorm2d(32),
      nn.ReLU(),
      ConvModule(32, 64, 3),
    )
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = 64
    for i, blocks in enumerate(STAGE_SIZES[depth] if isinstance(depth, int) else depth):
      mid = 64 * 2**i
      layer = []
      for j in range(blocks):
        layer.append(Bottleneck(cin, mid, 2 if (i > 0 and j == 0) else 1))
        cin = mid * 4
      setattr(self, f"layer{i + 1}", nn.Sequential(*layer))

  def forward(self, x):
    x = self.maxpool(self.stem(x))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Head(nn.Module):
  def __init__(self, num_classes):
    super().__init__()
    self.fc = nn.Linear(2048, num_classes)


class Classifier(nn.Module):
  """mmcls ImageClassifier: `backbone.*`, `head.fc.*`."""

  def __init__(self, depth, num_classes=1000, stem_kernel_size=3):
    super().__init__()
    self.backbone = Backbone(depth, stem_kernel_size)
    self.head = Head(num_classes)

  def forward(self, x):
    return self.head.fc(self.backbone(x).mean(dim=(2, 3)))


def randomise_(model, seed=0):
  """Well-conditioned random weights and BN statistics (see rednet.md).

  conv / linear N(0, 1/fan_in), BN gamma U(0.5, 1), beta and running mean
  N(0, 0.1), running var U(0.5, 1.5), num_batches_tracked random.
  """
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in**0.5)
        if m.bias is not None:
          m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
      elif isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(0.5 + 0.5 * torch.rand(m.weight.shape, generator=g))
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
  return model
