"""Synthetic-like images (SISSI): labelled objects keep their texture, unlabelled ones fade into blur.

``M`` is the union of the labelled objects (masks, or boxes painted as rectangles). The output is
the image seamlessly cloned with mixed gradients (OpenCV ``seamlessClone(..., MIXED_CLONE)``) inside
``M`` onto a Gaussian-blurred copy of itself. Unlabelled cells outside ``M`` are blurred away, so a
network trained on the synthetic image is not taught that they are background. OpenCV needs the
clone region to stay off the image border, so the image is padded (reflect) first and cropped back.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SeamlessError", "synthetic_like", "mask_from_boxes"]


class SeamlessError(ValueError):
    """The image or mask given to :func:`synthetic_like` is unusable."""


def mask_from_boxes(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Union of half-open boxes ``(y0, x0, y1, x1)`` as a boolean mask of ``shape``."""
    m = np.zeros(shape, bool)
    for y0, x0, y1, x1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        m[max(int(np.floor(y0)), 0):max(int(np.ceil(y1)), 0), max(int(np.floor(x0)), 0):max(int(np.ceil(x1)), 0)] = True
    return m


def _odd(k: int) -> int:
    k = max(int(k), 1)
    return k if k % 2 else k + 1


def synthetic_like(
    image: np.ndarray,
    mask: np.ndarray,
    blur_kernel: int = 71,
    blur_sigma: float = 30.0,
    dilate: int = 4,
) -> np.ndarray:
    """Seamless (mixed-gradient) clone of the image inside ``mask`` onto its blurred copy.

    Parameters
    ----------
    image : (C, Y, X) float image (normalised: any range) with 1 or more channels, or (Y, X).
    mask : (Y, X) labelled pixels (bool or instance ids; > 0 = labelled).
    blur_kernel, blur_sigma : Gaussian blur of the background copy (SISSI's code: 71 and 30; a
        weak blur is about 21 and 5).
    dilate : pixels the mask is grown by, so object borders keep their own gradient (OpenCV erodes
        the clone mask by 3 pixels internally: at least 4 keeps the edges).

    Returns
    -------
    Array of the image's shape and dtype float32. An empty mask gives the blurred image.
    """
    import cv2

    img = np.asarray(image, np.float32)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[None]
    if img.ndim != 3:
        raise SeamlessError(f"synthetic_like expects a 2D image (C, Y, X) or (Y, X), got shape {np.shape(image)}")
    m = np.asarray(mask) > 0
    if m.shape != img.shape[1:]:
        raise SeamlessError(f"mask shape {m.shape} does not match the image's {img.shape[1:]}")
    k = _odd(blur_kernel)
    if blur_sigma <= 0:
        raise SeamlessError(f"blur_sigma must be > 0, got {blur_sigma}")
    # map each channel to 8 bits (seamlessClone works on uint8 BGR) and back afterwards
    lo = img.reshape(img.shape[0], -1).min(axis=1)[:, None, None]
    hi = img.reshape(img.shape[0], -1).max(axis=1)[:, None, None]
    span = np.where(hi > lo, hi - lo, 1.0)
    u8 = np.clip(np.rint((img - lo) / span * 255.0), 0, 255).astype(np.uint8)
    blurred = np.stack([cv2.GaussianBlur(c, (k, k), blur_sigma, borderType=cv2.BORDER_REFLECT) for c in u8])
    if not m.any():
        return (blurred.astype(np.float32) / 255.0 * span + lo)[0 if squeeze else slice(None)]
    if dilate > 0:
        m = cv2.dilate(m.astype(np.uint8), np.ones((2 * dilate + 1,) * 2, np.uint8)).astype(bool)
    pad = 2 + dilate  # seamlessClone rejects a region touching the border
    out = np.empty_like(u8)
    for start in range(0, u8.shape[0], 3):  # OpenCV clones 3-channel images: go 3 channels at a time
        chans = list(range(start, min(start + 3, u8.shape[0])))
        src = np.stack([u8[c] for c in chans] + [u8[chans[-1]]] * (3 - len(chans)), axis=-1)
        dst = np.stack([blurred[c] for c in chans] + [blurred[chans[-1]]] * (3 - len(chans)), axis=-1)
        src_p = cv2.copyMakeBorder(src, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        dst_p = cv2.copyMakeBorder(dst, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        m_p = np.zeros(src_p.shape[:2], np.uint8)
        m_p[pad:-pad, pad:-pad] = m.astype(np.uint8) * 255
        ys, xs = np.nonzero(m_p)
        # OpenCV places the mask's bounding box at centre - size // 2: this centre keeps objects in place
        w, h = int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
        centre = (int(xs.min()) + w // 2, int(ys.min()) + h // 2)
        cloned = cv2.seamlessClone(src_p, dst_p, m_p, centre, cv2.MIXED_CLONE)
        cloned = cloned[pad:-pad, pad:-pad]
        for j, c in enumerate(chans):
            out[c] = cloned[..., j]
    res = out.astype(np.float32) / 255.0 * span + lo
    return res[0] if squeeze else res
