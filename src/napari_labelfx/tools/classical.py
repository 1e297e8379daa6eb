"""Classical (no learning) instance-mask generator for nuclei and cells: the source of noisy labels.

Pipeline (METHODS.md section 5, after the SISSI authors' ImageJ macro, re-expressed in Python):

1. grey image: the haematoxylin channel of a colour deconvolution (``skimage.color.rgb2hed``) for
   H&E RGB images, luminance for other RGB, the image itself for grey; rescaled to [0, 1] by
   percentiles and inverted when objects are darker than the background;
2. gamma correction, CLAHE (contrast-limited adaptive histogram equalisation);
3. median filter (salt noise) then bilateral filter (smooths inside objects, keeps their edges);
4. foreground = Otsu threshold of the image after opening-by-reconstruction then
   closing-by-reconstruction (removes small bright specks and dark holes without moving edges),
   combined with a local (adaptive mean) threshold that separates dim objects next to bright ones;
5. holes filled, small specks removed;
6. seeds = maxima of the (smoothed) distance transform at least ``seed_min_distance`` apart
   ("find maxima"), watershed on the Sobel gradient of the filtered image inside the foreground;
7. area filter; optional Hough circles add round objects (e.g. dead cells) that the watershed missed,
   with a non-maximum suppression against objects already found.

Everything is deterministic. The output is a uint16 instance mask (0 = background).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage as ndi


class ClassicalInputError(ValueError):
    """The image or the parameters given to the classical generator are unusable."""


#: Starting points per image type, measured on the development sets (fluorescence nuclei: dim and
#: bright nuclei side by side need a local threshold; H&E: the haematoxylin channel suits Otsu).
MODALITY_DEFAULTS: dict[str, dict] = {
    "fluorescence": {"threshold": "adaptive", "adaptive_offset": -0.03},
    "histology": {"channel": "hematoxylin", "threshold": "otsu+adaptive"},
    "brightfield": {"channel": "grey", "threshold": "otsu+adaptive"},
}
#: Size factors of :meth:`ClassicalParams.for_diameter` per modality: seed spacing, reconstruction
#: radius (fractions of the diameter) and minimum area (fraction of the disk area). Small, crowded
#: H&E nuclei over-split with the generic factors.
_SIZE_FACTORS: dict[str | None, tuple[float, float, float]] = {
    None: (1 / 4, 1 / 10, 0.1),
    "fluorescence": (1 / 4, 1 / 10, 0.1),
    "brightfield": (1 / 4, 1 / 10, 0.1),
    "histology": (1 / 3, 1 / 5, 0.25),
}


@dataclass
class ClassicalParams:
    """Parameters of :func:`classical_instances` (all exposed: none is sacred).

    Attributes
    ----------
    channel : ``"auto"`` (haematoxylin for RGB, the image for grey), ``"hematoxylin"``, ``"grey"``.
    dark_objects : objects darker than the background (bright-field grey images); ``None`` = decide
        from the image (objects are the minority phase after Otsu). The haematoxylin channel is
        already bright-on-dark.
    gamma : exponent applied to the [0, 1] image (< 1 brightens dim objects).
    clahe_clip : CLAHE clip limit (skimage units, 0..1); 0 disables CLAHE.
    clahe_kernel : CLAHE tile size in pixels; ``None`` = 1/8 of the image's sides.
    median_size : median filter size (pixels, odd); 0 or 1 disables it.
    bilateral_d, bilateral_sigma_color, bilateral_sigma_space : OpenCV bilateral filter (colour
        sigma in [0, 1] intensity units); ``bilateral_d=0`` disables it.
    reconstruction_radius : disk radius of the opening/closing by reconstruction; 0 disables.
    threshold : ``"otsu"``, ``"adaptive"``, ``"otsu+adaptive"`` (both must agree) or
        ``"otsu|adaptive"`` (either suffices).
    adaptive_block_size : neighbourhood (odd, pixels) of the adaptive threshold; make it larger than
        an object.
    adaptive_offset : subtracted from the local mean (negative = more permissive).
    otsu_scale : multiplies the Otsu threshold (< 1 keeps dimmer objects).
    seed_min_distance : minimum distance between watershed seeds (pixels).
    seed_sigma : Gaussian smoothing of the distance transform before finding maxima.
    gradient_sigma : Gaussian smoothing before the Sobel gradient, so texture inside objects does
        not draw watershed lines; 0 disables.
    min_area, max_area : area filter in pixels (``max_area=None``: no upper bound).
    hough : also detect circles (round cells) with the Hough transform.
    hough_min_radius, hough_max_radius : radius range of the circles (pixels).
    hough_param1, hough_param2 : OpenCV Canny high threshold and accumulator threshold.
    hough_min_dist : minimum distance between circle centres (pixels); ``None`` = min radius.
    hough_max_overlap : a circle is added only if at most this fraction of it covers found objects.
    """

    channel: str = "auto"
    dark_objects: bool | None = None
    gamma: float = 1.0
    clahe_clip: float = 0.01
    clahe_kernel: int | None = None
    median_size: int = 3
    bilateral_d: int = 5
    bilateral_sigma_color: float = 0.1
    bilateral_sigma_space: float = 3.0
    reconstruction_radius: int = 3
    threshold: str = "otsu+adaptive"
    adaptive_block_size: int = 101
    adaptive_offset: float = 0.0
    otsu_scale: float = 1.0
    seed_min_distance: int = 7
    seed_sigma: float = 2.0
    gradient_sigma: float = 1.0
    min_area: int = 30
    max_area: int | None = None
    hough: bool = False
    hough_min_radius: int = 5
    hough_max_radius: int = 25
    hough_param1: float = 100.0
    hough_param2: float = 20.0
    hough_min_dist: float | None = None
    hough_max_overlap: float = 0.2

    @classmethod
    def for_diameter(cls, diameter: float, modality: str | None = None, **overrides) -> ClassicalParams:
        """Parameters scaled to a typical object diameter in pixels (like Cellpose's ``diameter``).

        ``modality`` (a key of :data:`MODALITY_DEFAULTS`) adds that image type's defaults. Seed
        spacing ``d/4`` (histology ``d/3``), seed smoothing ``d/20``, adaptive block ``4d`` (odd),
        reconstruction radius ``d/10`` (histology ``d/5``), minimum area 10 % (histology 25 %) and
        maximum area 6x that of a disk of diameter ``d``, Hough radii ``d/4..d``. ``overrides`` set
        any other field.
        """
        d = float(diameter)
        if not np.isfinite(d) or d < 2:
            raise ClassicalInputError(f"object diameter must be >= 2 pixels, got {diameter}")
        if modality is not None and modality not in MODALITY_DEFAULTS:
            raise ClassicalInputError(f"unknown modality {modality!r}; choose from {sorted(MODALITY_DEFAULTS)}")
        seed_f, rec_f, area_f = _SIZE_FACTORS[modality]
        disk_area = np.pi * (d / 2) ** 2
        scaled = dict(
            seed_min_distance=max(int(round(d * seed_f)), 2),
            seed_sigma=max(d / 20, 0.5),
            adaptive_block_size=int(round(4 * d)) | 1,
            reconstruction_radius=max(int(round(d * rec_f)), 1),
            min_area=max(int(area_f * disk_area), 4),
            max_area=int(6 * disk_area) + 1,
            hough_min_radius=max(int(d / 4), 1),
            hough_max_radius=max(int(round(d)), 2),
        )
        if modality is not None:
            scaled.update(MODALITY_DEFAULTS[modality])
        scaled.update(overrides)
        return cls.from_dict(scaled)

    def to_dict(self) -> dict:
        """Plain-data copy (for JSON reports)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClassicalParams:
        """Build from a dict; unknown keys raise :class:`ClassicalInputError`."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ClassicalInputError(f"unknown classical generator parameters: {sorted(unknown)}")
        return cls(**d)

    def validate(self) -> None:
        """Raise :class:`ClassicalInputError` for values that cannot work."""
        if self.channel not in ("auto", "hematoxylin", "grey"):
            raise ClassicalInputError(f"channel must be auto|hematoxylin|grey, got {self.channel!r}")
        if self.threshold not in ("otsu", "adaptive", "otsu+adaptive", "otsu|adaptive"):
            raise ClassicalInputError(f"unknown threshold mode {self.threshold!r}")
        if self.gamma <= 0:
            raise ClassicalInputError("gamma must be > 0")
        if self.adaptive_block_size < 3:
            raise ClassicalInputError("adaptive_block_size must be >= 3")
        if self.max_area is not None and self.max_area < self.min_area:
            raise ClassicalInputError("max_area must be >= min_area")
        if self.hough and not 0 < self.hough_min_radius <= self.hough_max_radius:
            raise ClassicalInputError("Hough radii must satisfy 0 < min <= max")


# ----------------------------------------------------------------------------------------------


def _to_grey(image: np.ndarray, channel: str) -> tuple[np.ndarray, bool]:
    """Grey float image in [0, 1] and whether it came from the haematoxylin channel."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]  # alpha carries no stain information
    if img.ndim == 2:
        if channel == "hematoxylin":
            raise ClassicalInputError("the haematoxylin channel needs an RGB image, got a grey one")
        grey, is_h = img.astype(np.float64), False
    elif img.ndim == 3 and img.shape[-1] == 3:
        rgb = img.astype(np.float64)
        rgb = rgb / 255.0 if rgb.max() > 1.0 and rgb.max() <= 255.0 else rgb / max(rgb.max(), 1e-12)
        if channel == "grey":
            from skimage.color import rgb2gray

            grey, is_h = rgb2gray(rgb), False
        else:
            from skimage.color import rgb2hed

            grey, is_h = rgb2hed(rgb)[..., 0], True
    else:
        raise ClassicalInputError(
            f"classical generator needs a 2D grey (Y, X) or RGB (Y, X, 3) image, got shape {img.shape}"
        )
    finite = grey[np.isfinite(grey)]
    if finite.size == 0:
        raise ClassicalInputError("image has no finite pixel")
    lo, hi = np.percentile(finite, [0.5, 99.8])
    grey = np.clip((np.nan_to_num(grey, nan=lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return grey, is_h


def _reconstruct(seed: np.ndarray, mask: np.ndarray, dilate: bool, check_every: int = 8) -> np.ndarray:
    """Greyscale morphological reconstruction by iterated 3x3 geodesic dilation/erosion (OpenCV).

    On 8-bit images this is several times faster than ``skimage.morphology.reconstruction`` (which
    sorts all pixel values) and gives the same result: the iteration stops at idempotence.
    """
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    cur = np.minimum(seed, mask) if dilate else np.maximum(seed, mask)
    while True:
        prev = cur
        for _ in range(check_every):  # compare only now and then: the comparison costs as much as a step
            cur = np.minimum(cv2.dilate(cur, kernel), mask) if dilate else np.maximum(cv2.erode(cur, kernel), mask)
        if np.array_equal(prev, cur):
            return cur


def _opening_closing_by_reconstruction(img: np.ndarray, radius: int) -> np.ndarray:
    """Opening then closing by reconstruction of a [0, 1] image, computed on 256 grey levels."""
    import cv2

    if radius <= 0:
        return img
    fp = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    img8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    # opening by reconstruction: erode, then grow back under the original (removes small bright specks)
    opened = _reconstruct(cv2.erode(img8, fp, borderType=cv2.BORDER_REFLECT), img8, dilate=True)
    # closing by reconstruction: dilate, then shrink back over the opened image (fills dark holes)
    closed = _reconstruct(cv2.dilate(opened, fp, borderType=cv2.BORDER_REFLECT), opened, dilate=False)
    return closed.astype(np.float64) / 255.0


def _foreground(filtered: np.ndarray, params: ClassicalParams) -> np.ndarray:
    from skimage.filters import threshold_local, threshold_otsu

    masks = {}
    if "otsu" in params.threshold:
        rec = _opening_closing_by_reconstruction(filtered, params.reconstruction_radius)
        t = threshold_otsu(rec) if rec.max() > rec.min() else np.inf
        masks["otsu"] = rec > t * params.otsu_scale
    if "adaptive" in params.threshold:
        block = int(params.adaptive_block_size) | 1  # must be odd
        local = threshold_local(filtered, block_size=block, method="mean", offset=params.adaptive_offset)
        masks["adaptive"] = filtered > local
    if params.threshold == "otsu+adaptive":
        return masks["otsu"] & masks["adaptive"]
    if params.threshold == "otsu|adaptive":
        return masks["otsu"] | masks["adaptive"]
    return masks[params.threshold]


def _hough_circles(filtered: np.ndarray, labels: np.ndarray, params: ClassicalParams) -> np.ndarray:
    """Add circles from OpenCV's Hough gradient transform where no object was found (greedy NMS)."""
    import cv2

    img8 = np.clip(filtered * 255.0, 0, 255).astype(np.uint8)
    min_dist = params.hough_min_dist if params.hough_min_dist is not None else params.hough_min_radius
    circles = cv2.HoughCircles(
        img8,
        cv2.HOUGH_GRADIENT,
        dp=1,
        minDist=float(max(min_dist, 1)),
        param1=float(params.hough_param1),
        param2=float(params.hough_param2),
        minRadius=int(params.hough_min_radius),
        maxRadius=int(params.hough_max_radius),
    )
    if circles is None:
        return labels
    out = labels.copy()
    next_id = int(out.max()) + 1
    yy, xx = np.ogrid[: out.shape[0], : out.shape[1]]
    # OpenCV returns circles by decreasing accumulator votes: the greedy pass is a score-ordered NMS
    for x, y, r in circles[0]:
        y0, y1 = max(int(y - r - 1), 0), min(int(y + r + 2), out.shape[0])
        x0, x1 = max(int(x - r - 1), 0), min(int(x + r + 2), out.shape[1])
        disk_mask = (yy[y0:y1] - y) ** 2 + (xx[:, x0:x1] - x) ** 2 <= r * r
        if not disk_mask.any():
            continue
        covered = np.count_nonzero(out[y0:y1, x0:x1][disk_mask]) / np.count_nonzero(disk_mask)
        if covered > params.hough_max_overlap:
            continue
        region = out[y0:y1, x0:x1]
        region[disk_mask & (region == 0)] = next_id
        next_id += 1
    return out


def classical_instances(image: np.ndarray, params: ClassicalParams | None = None) -> np.ndarray:
    """Segment nuclei/cells with classical image processing (deterministic).

    Parameters
    ----------
    image : 2D grey ``(Y, X)`` (or ``(1, Y, X)``) or RGB ``(Y, X, 3|4)`` image, any numeric dtype.
    params : :class:`ClassicalParams`; defaults suit fluorescence nuclei about 20-80 px wide.

    Returns
    -------
    uint16 instance mask of shape ``(Y, X)``, ids 1..n, 0 = background.
    """
    import cv2
    from skimage.exposure import equalize_adapthist
    from skimage.feature import peak_local_max
    from skimage.filters import sobel, threshold_otsu
    from skimage.segmentation import relabel_sequential, watershed

    params = params or ClassicalParams()
    params.validate()
    grey, is_h = _to_grey(image, params.channel)

    dark = params.dark_objects
    if dark is None:
        # objects are the minority phase: if most pixels are above Otsu, the objects are the dark ones
        t = threshold_otsu(grey) if grey.max() > grey.min() else 0.5
        dark = (not is_h) and np.mean(grey > t) > 0.5
    if dark:
        grey = 1.0 - grey

    img = grey ** params.gamma
    if params.clahe_clip > 0:
        kernel = params.clahe_kernel or None
        img = equalize_adapthist(img, kernel_size=kernel, clip_limit=params.clahe_clip)
    img = img.astype(np.float32)
    if params.median_size > 1:
        size = int(params.median_size) | 1
        # OpenCV's median accepts float32 only for 3 and 5; scipy is the (slower) general case
        img = cv2.medianBlur(img, size) if size in (3, 5) else ndi.median_filter(img, size=size)
    if params.bilateral_d > 0:
        img = cv2.bilateralFilter(
            img, int(params.bilateral_d), float(params.bilateral_sigma_color), float(params.bilateral_sigma_space)
        )
    filtered = img.astype(np.float64)

    fg = _foreground(filtered, params)
    fg = ndi.binary_fill_holes(fg)
    fg = ndi.binary_opening(fg, structure=np.ones((3, 3), bool))
    structure = np.ones((3, 3), bool)
    comp, n = ndi.label(fg, structure=structure)
    if n:
        areas = np.bincount(comp.ravel())
        small = areas < max(params.min_area, 1)
        small[0] = False
        fg &= ~small[comp]
        comp, n = ndi.label(fg, structure=structure)

    labels = np.zeros(fg.shape, np.int32)
    if n:
        dist = ndi.distance_transform_edt(fg)
        if params.seed_sigma > 0:
            dist = ndi.gaussian_filter(dist, params.seed_sigma)
        peaks = peak_local_max(
            dist, min_distance=max(int(params.seed_min_distance), 1), labels=comp, exclude_border=False
        )
        markers = np.zeros(fg.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        smooth = ndi.gaussian_filter(filtered, params.gradient_sigma) if params.gradient_sigma > 0 else filtered
        labels = watershed(sobel(smooth), markers, mask=fg)
        lost = fg & (labels == 0)  # components without a seed keep one id each
        if lost.any():
            extra, _ = ndi.label(lost, structure=structure)
            labels = np.where(lost, extra + labels.max(), labels)
        areas = np.bincount(labels.ravel())
        bad = areas < params.min_area
        if params.max_area is not None:
            bad |= areas > params.max_area
        bad[0] = False
        labels[bad[labels]] = 0

    if params.hough:
        labels = _hough_circles(filtered, labels, params)
    labels, _, _ = relabel_sequential(labels)
    if labels.max() > np.iinfo(np.uint16).max:
        raise ClassicalInputError(f"{labels.max()} objects do not fit a uint16 mask")
    return labels.astype(np.uint16)


def estimate_diameter(image: np.ndarray, modality: str | None = "fluorescence", min_size: int = 9) -> float | None:
    """Typical object diameter (pixels) of a 2D grey or RGB image, or None when no objects stand out.

    Objects are the Otsu phase that is the minority (as in :func:`classical_instances`); each
    connected object's area-equivalent diameter, capped at three times its largest inscribed radius
    (so touching objects merged into one component do not count as one big object), and the median
    over objects is returned.
    """
    from skimage.filters import threshold_otsu

    channel = str(MODALITY_DEFAULTS.get(modality or "", {}).get("channel", "auto"))
    img = np.asarray(image)
    if channel == "hematoxylin" and not (img.ndim == 3 and img.shape[-1] in (3, 4)):
        channel = "grey"
    grey, is_h = _to_grey(img, channel)
    grey = ndi.gaussian_filter(grey, 1.0)
    if not grey.max() > grey.min():
        return None
    t = threshold_otsu(grey)
    fg = grey > t
    if not is_h and fg.mean() > 0.5:  # objects are the minority phase
        fg = ~fg
    comp, n = ndi.label(fg)
    if n == 0:
        return None
    sizes = np.bincount(comp.ravel())
    keep = np.flatnonzero(sizes >= max(int(min_size), 1))
    keep = keep[keep > 0]
    if keep.size == 0:
        return None
    radii = np.asarray(ndi.maximum(ndi.distance_transform_edt(fg), comp, keep), float)
    # the area's equivalent diameter, but at most 3 inscribed radii: an elongated nucleus counts
    # whole, a chain of merged ones does not
    equivalent = 2.0 * np.sqrt(sizes[keep] / np.pi)
    d = float(np.median(np.minimum(equivalent, 3.0 * radii)))
    return d if d >= 3.0 else None
