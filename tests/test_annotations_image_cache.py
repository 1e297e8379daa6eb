"""The normalised image is computed once per source array while a live session resends annotations."""
import numpy as np

from napari_labelfx.annotations import _image_cache
from napari_labelfx.annotations.model import to_channels_first


def _view(image, axes="YX", normalise=True):
    calls = []

    def compute():
        calls.append(1)
        return to_channels_first(image, axes, normalise=normalise)

    return _image_cache.cached_view(image, axes, normalise, compute), len(calls)


def test_same_array_is_normalised_once_and_edits_or_new_arrays_are_not_served_stale():
    _image_cache.clear()
    rng = np.random.default_rng(0)
    image = rng.random((64, 80)).astype(np.float32) * 1000
    first, n1 = _view(image)
    again, n2 = _view(image)
    assert (n1, n2) == (1, 0) and again is first and not first.flags.writeable
    np.testing.assert_allclose(first, to_channels_first(image, "YX"))
    image[::2] *= 3  # edited in place (a value the fingerprint samples): computed again
    edited, n3 = _view(image)
    assert n3 == 1 and not np.array_equal(edited, first)
    _, n4 = _view(image.copy())  # another array with the same values: a miss, never a wrong hit
    assert n4 == 1
    _, n5 = _view(image, normalise=False)  # other settings: another entry
    assert n5 == 1


def test_the_persons_array_is_never_flagged_read_only():
    _image_cache.clear()
    image = np.zeros((1, 8, 8), np.float32)  # already float32 channels first: not normalised, returned as is
    out, _ = _view(image, axes="CYX", normalise=False)
    assert image.flags.writeable
    image[0, 0, 0] = 1  # still paintable
    assert np.shares_memory(out, image) and out[0, 0, 0] == 1  # handed back uncached, not a stale copy


def test_the_cache_stays_small():
    _image_cache.clear()
    for k in range(_image_cache.MAX_ENTRIES + 5):
        _view(np.full((8, 8), k, np.float32))
    assert len(_image_cache._entries) <= _image_cache.MAX_ENTRIES
