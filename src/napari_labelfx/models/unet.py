"""UNet for 2D and 3D with decoder taps f0..f_depth, penultimate features and an optional image head."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_labelfx.models.blocks import DoubleConv, Down, Up, conv_nd, init_weights
from napari_labelfx.models.config import ModelConfig
from napari_labelfx.models.output import SegOutput
from napari_labelfx.models.registry import register_model


@register_model("unet")
class UNet(nn.Module):
    """Classic UNet: two 3x3 convs per level, ``depth`` max-pool downsamplings, skip connections.

    Level i (0 = full resolution) has ``width * 2**i`` channels. Any input size works: the input is
    padded at the far end of each axis to a multiple of ``2**depth`` (reflect, or replicate when the
    input is too small to reflect) and every output is cropped back to the valid region.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        dims, norm, w, depth = cfg.spatial_dims, cfg.norm, cfg.width, cfg.depth
        chans = [w * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(cfg.in_channels, chans[0], dims, norm)
        self.downs = nn.ModuleList(Down(chans[i], chans[i + 1], dims, norm) for i in range(depth))
        self.ups = nn.ModuleList(
            Up(chans[i + 1], chans[i], chans[i], dims, norm, cfg.upsample) for i in reversed(range(depth))
        )
        dropout = nn.Dropout2d if dims == 2 else nn.Dropout3d
        self.dropout = dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.head = conv_nd(dims)(chans[0], cfg.num_classes, kernel_size=1)
        self.image_head = nn.Linear(chans[-1], cfg.num_classes) if cfg.image_head else None
        self.feature_channels: int = chans[0]
        self.decoder_channels: list[int] = list(reversed(chans))
        init_weights(self, cfg.init)

    # -- helpers -----------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != cfg.spatial_dims + 2 or x.shape[1] != cfg.in_channels:
            axes = "(B, C, H, W)" if cfg.spatial_dims == 2 else "(B, C, D, H, W)"
            raise ValueError(
                f"UNet expects input {axes} with C={cfg.in_channels}, got shape {tuple(x.shape)}"
            )

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        div = self.config.divisor
        sizes = x.shape[2:]
        extra = [(-s) % div for s in sizes]
        if not any(extra):
            return x
        # F.pad lists (before, after) pairs from the LAST axis backwards; pad only "after"
        pads: list[int] = []
        for e in reversed(extra):
            pads += [0, e]
        mode = "reflect" if all(e < s for e, s in zip(extra, sizes)) else "replicate"
        return F.pad(x, pads, mode=mode)

    @staticmethod
    def _crop(t: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        return t[(Ellipsis, *(slice(0, s) for s in size))]

    def _encode_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = [self.inc(self._pad(x))]
        for down in self.downs:
            skips.append(down(skips[-1]))
        return skips

    def _valid_size(self, size: tuple[int, ...], level: int) -> tuple[int, ...]:
        """Valid extent of decoder map ``level`` (0 = bottleneck) for an input of ``size``."""
        factor = 2 ** (self.config.depth - level)
        return tuple(math.ceil(s / factor) for s in size)

    # -- public API --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck features (B, decoder_channels[0], *ceil(size / 2**depth)) of ``x``."""
        self._check_input(x)
        size = tuple(x.shape[2:])
        return self._crop(self._encode_padded(x)[-1], self._valid_size(size, 0))

    def classify(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """Image-level logits (B, num_classes) from bottleneck features: global average pool -> linear."""
        if self.image_head is None:
            raise ValueError("this model has no image-level head (build it with image_head=True)")
        return self.image_head(bottleneck.flatten(2).mean(dim=2))

    def forward(self, x: torch.Tensor) -> SegOutput:
        self._check_input(x)
        scale = self.config.input_scale
        if scale != 1.0:
            # the working scale: the network sees a smaller image, the caller gets full-size logits
            # (decoder maps and features stay at the working scale)
            full = tuple(x.shape[2:])
            small = tuple(max(1, int(round(s * scale))) for s in full)
            mode = "bilinear" if x.ndim == 4 else "trilinear"
            x = F.interpolate(x, size=small, mode=mode, align_corners=False, antialias=x.ndim == 4)
            out = self._forward(x)
            logits = F.interpolate(out.logits, size=full, mode=mode, align_corners=False)
            return SegOutput(logits=logits, features=out.features, decoder=out.decoder, image_logits=out.image_logits)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> SegOutput:
        size = tuple(x.shape[2:])
        skips = self._encode_padded(x)
        h = skips.pop()
        maps = [h]
        for up in self.ups:
            # pop: once concatenated, a skip map is no longer referenced and its memory is freed
            h = up(h, skips.pop())
            maps.append(h)
        decoder = [self._crop(m, self._valid_size(size, i)) for i, m in enumerate(maps)]
        features = self.dropout(decoder[-1])
        logits = self.head(features)
        image_logits = self.classify(decoder[0]) if self.image_head is not None else None
        return SegOutput(logits=logits, features=features, decoder=decoder, image_logits=image_logits)
