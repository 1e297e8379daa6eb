"""Self-contained UNet for exported models: only ``torch`` is needed to rebuild it.

This file is copied verbatim into bioimage.io packages as the architecture source of their
``pytorch_state_dict`` weights, so software that knows nothing of napari-labelfx (bioimageio.core,
Fiji, ilastik, ...) can rebuild the network. It must therefore import nothing from napari-labelfx.

The module tree (and so every state-dict key) is the same as ``napari_labelfx.models.unet.UNet``; the
forward pass returns class probabilities (softmax, or sigmoid for multi-label models) instead of a
``SegOutput``, because exchange formats need a plain tensor. The test suite checks that both networks
give the same output.

With ``exact_size=True`` the network skips the padding to a multiple of ``2**depth`` and the crop
back: ONNX and TorchScript graphs are traced in that mode so that no input size is baked into them
(the package's axes then ask for sizes that are multiples of ``2**depth``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _conv(dims: int) -> Any:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        groups = min(8, channels)
        while channels % groups:
            groups -= 1
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def _conv_norm_act(cin: int, cout: int, dims: int, norm: str) -> nn.Sequential:
    conv = _conv(dims)(cin, cout, kernel_size=3, padding=1, bias=norm == "none")
    return nn.Sequential(conv, _norm(norm, cout, dims), nn.ReLU(inplace=True))


def _double_conv(cin: int, cout: int, dims: int, norm: str) -> nn.Sequential:
    return nn.Sequential(_conv_norm_act(cin, cout, dims, norm), _conv_norm_act(cout, cout, dims, norm))


class _Up(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, dims: int, norm: str, mode: str) -> None:
        super().__init__()
        self.linear = mode == "linear"
        if mode == "transpose":
            tconv = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
            self.up = tconv(cin, cskip, kernel_size=2, stride=2)
        elif mode == "linear":
            self.reduce = _conv(dims)(cin, cskip, kernel_size=1)
            self.interp = "bilinear" if dims == 2 else "trilinear"
        else:
            raise ValueError(f"unknown upsample mode {mode!r}")
        self.conv = _double_conv(2 * cskip, cout, dims, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.linear:
            # every map is a multiple of 2**depth here, so the skip is exactly twice as large and
            # scale_factor=2 equals size=skip.shape; scale_factor keeps traced graphs size-free
            x = F.interpolate(self.reduce(x), scale_factor=2.0, mode=self.interp, align_corners=False)
        else:
            x = self.up(x)
        return self.conv(torch.cat([skip, x], dim=1))


class LabelfxUNet(nn.Module):
    """UNet returning per-class probabilities ``(B, num_classes, *spatial)``.

    Keyword arguments are those of napari-labelfx's ``ModelConfig`` (unknown ones are ignored so a
    config written by a newer version still builds).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 4,
        width: int = 16,
        norm: str = "batch",
        upsample: str = "linear",
        multilabel: bool = False,
        image_head: bool = False,
        exact_size: bool = False,
        **_: Any,
    ) -> None:
        super().__init__()
        dims = int(spatial_dims)
        chans = [width * 2**i for i in range(depth + 1)]
        self.divisor = 2**depth
        self.multilabel = bool(multilabel)
        self.exact_size = bool(exact_size)
        self.inc = _double_conv(in_channels, chans[0], dims, norm)
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        self.downs = nn.ModuleList(
            nn.Sequential(pool(2), _double_conv(chans[i], chans[i + 1], dims, norm)) for i in range(depth)
        )
        self.ups = nn.ModuleList(
            _Up(chans[i + 1], chans[i], chans[i], dims, norm, upsample) for i in reversed(range(depth))
        )
        self.head = _conv(dims)(chans[0], num_classes, kernel_size=1)
        # kept only so the trained state dict loads strictly; its image-level logits are not an output
        self.image_head = nn.Linear(chans[-1], num_classes) if image_head else None

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        sizes = x.shape[2:]
        extra = [(-int(s)) % self.divisor for s in sizes]
        if not any(extra):
            return x
        pads: list[int] = []
        for e in reversed(extra):
            pads += [0, e]
        mode = "reflect" if all(e < int(s) for e, s in zip(extra, sizes)) else "replicate"
        return F.pad(x, pads, mode=mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        h = x if self.exact_size else self._pad(x)
        skips = [self.inc(h)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in self.ups:
            h = up(h, skips.pop())
        logits = self.head(h)
        if not self.exact_size:
            logits = logits[(Ellipsis, *(slice(0, int(s)) for s in size))]
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)
