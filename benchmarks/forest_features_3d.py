"""Filter features of a volume: tile by tile (each tile with its own halo) against the feature cache.

    .venv/bin/python benchmarks/forest_features_3d.py [--image ../shared/data/nuclei3d_cells3d/images/X.tif]

On a volume not much larger than a 3D tile plus the filter bank's halo (61 voxels with the default
sigmas), every tile read nearly the whole volume; the cache now computes such an image in one pass and
serves every tile from it. Times the old path on the first two tiles (extrapolated to all) and the
cache on all tiles, in one run. Prints JSON.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default=None, help="a (Z, Y, X) TIFF (default: the cells3d volume of ../shared/data)")
    args = p.parse_args(argv)
    import tifffile

    from napari_labelfx.core.normalize import percentile_normalise
    from napari_labelfx.forest.features import FilterBank
    from napari_labelfx.forest.tiles import FeatureCache, image_tiles

    path = args.image or sorted(glob.glob("../shared/data/nuclei3d_cells3d/images/*"))[0]
    img = tifffile.imread(path).astype(np.float32)
    img = np.ascontiguousarray(percentile_normalise(img[None]))
    bank = FilterBank(spatial_dims=3)
    tiles = image_tiles(img.shape[1:])
    t = time.perf_counter()
    for tile in tiles[:2]:
        bank.compute_region(img, tile)
    old_two = time.perf_counter() - t
    cache = FeatureCache(bank)
    t = time.perf_counter()
    for tile in tiles:
        cache.features(img, tile, "volume")
    new_all = time.perf_counter() - t
    old_all = old_two / min(2, len(tiles)) * len(tiles)
    print(json.dumps({"image": path, "shape": list(img.shape), "tiles": len(tiles), "halo": bank.halo,
                      "n_features": bank.n_features(1), "tile_by_tile_first_2_s": round(old_two, 1),
                      "tile_by_tile_all_s_extrapolated": round(old_all, 1), "cache_all_tiles_s": round(new_all, 1),
                      "speedup": round(old_all / new_all, 2), "cache_misses": cache.misses, "cache_hits": cache.hits,
                      "load_average": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
