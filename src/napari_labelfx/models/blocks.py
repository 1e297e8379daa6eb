"""Dimension-generic building blocks (2D and 3D) for the UNet."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_nd(dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return nn.Conv2d if dims == 2 else nn.Conv3d


def make_norm(kind: str, channels: int, dims: int) -> nn.Module:
    """Normalisation layer by name; ``"none"`` gives an identity."""
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        # affine + no running stats: behaves the same in train and eval, like GroupNorm
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        groups = min(8, channels)
        while channels % groups:
            groups -= 1
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class ConvNormAct(nn.Sequential):
    """3x3(x3) convolution -> normalisation -> ReLU.

    In eval mode a BatchNorm is folded into the convolution (it is then an affine map per channel),
    which skips one full-size intermediate tensor and one pass over it: less memory and time in
    inference, same result up to float rounding.
    """

    def __init__(self, cin: int, cout: int, dims: int, norm: str) -> None:
        # the conv bias is redundant before a normalisation layer with its own shift
        conv = conv_nd(dims)(cin, cout, kernel_size=3, padding=1, bias=norm == "none")
        super().__init__(conv, make_norm(norm, cout, dims), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, act = self[0], self[1], self[2]
        if not self.training and isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_var is not None:
            scale = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                scale = scale * norm.weight
            shift = -norm.running_mean * scale
            if norm.bias is not None:
                shift = shift + norm.bias
            if conv.bias is not None:
                shift = shift + conv.bias * scale
            weight = conv.weight * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
            return act(conv._conv_forward(x, weight, shift))
        return act(norm(conv(x)))


class DoubleConv(nn.Sequential):
    """Two ConvNormAct layers: the unit of every UNet level."""

    def __init__(self, cin: int, cout: int, dims: int, norm: str) -> None:
        super().__init__(ConvNormAct(cin, cout, dims, norm), ConvNormAct(cout, cout, dims, norm))


class Down(nn.Sequential):
    """2x max-pool followed by a DoubleConv."""

    def __init__(self, cin: int, cout: int, dims: int, norm: str) -> None:
        pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
        super().__init__(pool, DoubleConv(cin, cout, dims, norm))


class Up(nn.Module):
    """2x upsampling of the coarser map, concatenation with the skip, DoubleConv.

    ``mode="linear"`` halves the channels with a 1x1 convolution, then interpolates (bi/trilinear);
    ``mode="transpose"`` learns the upsampling with a stride-2 transposed convolution that also halves
    the channels. The 1x1 convolution runs before the interpolation because both are linear and
    commute (interpolation weights sum to 1, so even the bias commutes): same result, 2**dims times
    fewer operations and a smaller full-resolution tensor.
    """

    def __init__(self, cin: int, cskip: int, cout: int, dims: int, norm: str, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            tconv = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
            self.up: nn.Module | None = tconv(cin, cskip, kernel_size=2, stride=2)
            merged = 2 * cskip
        elif mode == "linear":
            self.up = None
            self.reduce = conv_nd(dims)(cin, cskip, kernel_size=1)
            self.interp = "bilinear" if dims == 2 else "trilinear"
            merged = 2 * cskip
        else:
            raise ValueError(f"unknown upsample mode {mode!r}")
        self.conv = DoubleConv(merged, cout, dims, norm)

    def _upsample(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.up is not None:
            return self.up(x)
        return F.interpolate(self.reduce(x), size=size, mode=self.interp, align_corners=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # no local name keeps the upsampled map alive: it is freed as soon as it is concatenated
        return self.conv(torch.cat([skip, self._upsample(x, skip.shape[2:])], dim=1))


def init_weights(module: nn.Module, scheme: str) -> None:
    """Kaiming (fan-in, ReLU gain) or Xavier init of conv/linear weights; zero biases; unit norms."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif scheme == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
