"""CIELAB conversions used by the stain and skin-tone tools (one definition for both).

The LAB used throughout is **CIELAB, D65 white, from sRGB** (with the sRGB gamma curve), L in
[0, 100] and a, b roughly in [-128, 127], with OpenCV's sRGB matrix and white point. It is computed
with the exact CIE formulas: OpenCV's own float ``COLOR_RGB2Lab`` interpolates tables and is off
by up to ~0.5 a/b units (one grey level after a round trip), so only its fast per-pixel matrix
product (``cv2.transform``) and table look-up (``cv2.LUT``) are used. The torch functions implement
the same formulas, so CPU and GPU agree to float32 precision.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: sRGB (linear) -> XYZ, the matrix OpenCV uses.
RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
#: D65 reference white as OpenCV normalises X and Z.
WHITE_D65 = np.array([0.950456, 1.0, 1.088754])
_EPS = 0.008856  # (6/29)^3: below it the cube root is replaced by a line
_KAPPA = 903.3  # L slope below _EPS


def transform(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per-pixel affine map ``m @ [x, 1]`` (``m`` 3x3 or 3x4) of a float32 array ``(..., 3)``.

    OpenCV's ``transform`` does this in one vectorised pass, several times faster than
    ``x @ m.T`` for the tall (10^7 x 3) arrays of whole slides' tiles.
    """
    shape = x.shape
    flat = np.ascontiguousarray(as_cv_image(x), dtype=np.float32)
    return cv2.transform(flat, np.asarray(m, dtype=np.float64)).reshape(shape[:-1] + (-1,))


def as_cv_image(x: np.ndarray) -> np.ndarray:
    """View ``(..., C)`` as a 2-D OpenCV image ``(rows, cols, C)`` with long rows.

    OpenCV loops over rows, so a column of 10^7 one-pixel rows is several times slower than the
    same pixels laid out in rows of a thousand.
    """
    if x.ndim == 3 and x.shape[1] >= 64:
        return x
    n = int(np.prod(x.shape[:-1]))
    cols = 1024 if n % 1024 == 0 else n
    return x.reshape(n // cols if cols else 0, cols, x.shape[-1])


def _srgb_to_linear(f: np.ndarray) -> np.ndarray:
    out = (f + np.float32(0.055)) * np.float32(1 / 1.055)
    np.power(out, np.float32(2.4), out=out)
    # piecewise by copyto(where=...): one pass, unlike boolean fancy indexing (two scans + scatter)
    np.copyto(out, f * np.float32(1 / 12.92), where=f <= 0.04045)
    return out


def _linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """sRGB gamma of linear values; clips ``lin`` to [0, 1] in place (callers pass temporaries)."""
    np.clip(lin, 0.0, 1.0, out=lin)
    out = np.power(lin, np.float32(1 / 2.4), dtype=np.float32)
    out *= np.float32(1.055)
    out -= np.float32(0.055)
    low = lin <= 0.0031308
    lin *= np.float32(12.92)
    np.copyto(out, lin, where=low)
    return out


#: Exact linear value of each 8-bit sRGB level (a table instead of a power per pixel).
_SRGB_LUT = _srgb_to_linear(np.arange(256, dtype=np.float32) / np.float32(255.0)).reshape(1, 256)
#: XYZ (normalised by the white point) <- linear RGB.
_M_FWD = RGB_TO_XYZ / WHITE_D65[:, None]
#: (L, a, b) = _F_TO_LAB @ [fx, fy, fz, 1]
_F_TO_LAB = np.array([[0.0, 116.0, 0.0, -16.0], [500.0, -500.0, 0.0, 0.0], [0.0, 200.0, -200.0, 0.0]])
#: [fx, fy, fz] = _LAB_TO_F @ [L, a, b, 1]
_LAB_TO_F = np.array(
    [[1 / 116, 1 / 500, 0.0, 16 / 116], [1 / 116, 0.0, 0.0, 16 / 116], [1 / 116, 0.0, -1 / 200, 16 / 116]]
)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65, from sRGB) of an RGB array ``(..., 3)``, by the exact CIE formulas.

    Parameters
    ----------
    rgb : uint8 (0-255) or float (0-1) RGB, channels last, any leading shape.

    Returns
    -------
    float32 ``(..., 3)``: L in [0, 100], a, b.
    """
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"rgb_to_lab expects 3 channels last, got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        lin = cv2.LUT(np.ascontiguousarray(as_cv_image(rgb)), _SRGB_LUT).reshape(rgb.shape)
    else:
        lin = _srgb_to_linear(np.asarray(rgb, dtype=np.float32))
    xyz = transform(lin, _M_FWD)
    f = np.cbrt(xyz)
    low = xyz <= _EPS  # the CIE linear segment near black
    xyz *= np.float32(7.787)
    xyz += np.float32(16 / 116)
    np.copyto(f, xyz, where=low)
    return transform(f, _F_TO_LAB)


def lab_to_linear(lab: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
    """Linear RGB (not clipped) of CIELAB ``(..., 3)``; ``affine`` (3x4) is applied to LAB first.

    Folding a per-channel LAB affine map (Reinhard's mean/std transfer) into the first matrix saves
    a pass over the image.
    """
    m = _LAB_TO_F
    if affine is not None:
        a = np.vstack([np.asarray(affine, dtype=np.float64), [0.0, 0.0, 0.0, 1.0]])
        m = (np.vstack([_LAB_TO_F, [0.0, 0.0, 0.0, 1.0]]) @ a)[:3]
    f = transform(np.asarray(lab, dtype=np.float32), m)
    xyz = f * f
    xyz *= f
    low = f <= 6 / 29
    f -= np.float32(16 / 116)
    f *= np.float32(1 / 7.787)
    np.copyto(xyz, f, where=low)
    return transform(xyz, np.linalg.inv(_M_FWD))


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (float32, clipped) of a CIELAB array ``(..., 3)`` (inverse of :func:`rgb_to_lab`)."""
    return _linear_to_srgb(lab_to_linear(lab))


def lab_to_rgb_uint8(lab: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
    """8-bit sRGB (rounded, saturated) of CIELAB ``(..., 3)``, optionally after a LAB affine map."""
    srgb = _linear_to_srgb(lab_to_linear(lab, affine))
    shape = srgb.shape
    # values are in [0, 1] here, so convertScaleAbs is a plain scale + round + saturate
    return cv2.convertScaleAbs(as_cv_image(srgb), alpha=255.0).reshape(shape)


def rgb_to_lab_torch(rgb: torch.Tensor) -> torch.Tensor:
    """CIELAB of a float RGB tensor in [0, 1], channels last ``(..., 3)`` (same formulas as OpenCV)."""
    import torch

    x = rgb.float()
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    m = torch.as_tensor(RGB_TO_XYZ / WHITE_D65[:, None], dtype=x.dtype, device=x.device)
    xyz = lin @ m.T
    f = torch.where(xyz > _EPS, xyz.clamp_min(_EPS) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    y = xyz[..., 1]
    light = torch.where(y > _EPS, 116.0 * f[..., 1] - 16.0, _KAPPA * y)
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return torch.stack([light, a, b], dim=-1)


def lab_to_rgb_torch(lab: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (clipped) of a CIELAB tensor ``(..., 3)`` (inverse of :func:`rgb_to_lab_torch`)."""
    import torch

    lab = lab.float()
    light, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    fy = (light + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = fy - b / 200.0
    delta = 6.0 / 29.0

    def finv(t: torch.Tensor) -> torch.Tensor:
        return torch.where(t > delta, t**3, (t - 16.0 / 116.0) / 7.787)

    y = torch.where(light > _KAPPA * _EPS, fy**3, light / _KAPPA)
    xyz = torch.stack([finv(fx), y, finv(fz)], dim=-1)
    m = torch.as_tensor(np.linalg.inv(RGB_TO_XYZ / WHITE_D65[:, None]), dtype=lab.dtype, device=lab.device)
    lin = (xyz @ m.T).clamp(0.0, 1.0)
    rgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055)
    return rgb.clamp(0.0, 1.0)
