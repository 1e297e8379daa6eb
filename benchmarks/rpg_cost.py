"""Cost of RPG's pseudo-label step against a training step and a naive full-distance-matrix search.

For each pool size p and neighbour count k, one fresh subprocess measures one thing (so its peak
resident memory is that thing's own): the chunked search (``methods/_reference.pseudo_label_grid``),
the naive search (full distance matrix, ``topk`` and a gather of the k labels), or one plain training
step of the network on the same images (forward + backward + optimizer). Peak memory is the growth of
the process's peak RSS over its size right before the measured call (CPU), or
``torch.cuda.max_memory_allocated`` growth on CUDA.

Usage::

    .venv/bin/python benchmarks/rpg_cost.py --out /tmp/rpg_cost.json [--device cpu] [--patch 128]
        [--batch 4] [--unlabelled 2] [--grid 64] [--preset small] [--features 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

NUM_CLASSES = 6  # JSRT: 5 classes + "no label"
NAIVE_LIMIT_GB = 3.0  # the naive search is skipped beyond this estimate (shared machine)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run inside the subprocess: one kind of measurement."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from napari_labelfx.methods import _reference as R

    dev = torch.device(args.device)
    h = w = args.patch
    p, u = args.pool, args.unlabelled
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if args.what == "step":
        from napari_labelfx.methods import losses
        from napari_labelfx.models import PRESETS, ModelConfig, build_model

        net = build_model(ModelConfig.from_dict({**PRESETS[args.preset], "spatial_dims": 2, "in_channels": 1,
                                                 "num_classes": NUM_CLASSES - 1, "multilabel": True})).to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        n = args.batch + p + u
        x = torch.rand(n, 1, h, w, device=dev)
        y = (torch.rand(n, NUM_CLASSES - 1, h, w, device=dev) > 0.5).to(torch.uint8)

        def run() -> None:
            out = net(x)
            loss = losses.bce_with_ignore(out.logits, y) + losses.soft_dice_loss_multilabel(out.logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        if args.data:
            qf, rf, rl = _real_features(args, dev)
            f = qf.shape[1]
        else:
            f = args.features
            qf = torch.randn(u, f, h, w, device=dev)
            rf = torch.randn(p, f, h, w, device=dev)
            rl = (torch.rand(p, NUM_CLASSES - 1, h, w, device=dev) > 0.7).to(torch.uint8)
        n_refs = p * min(args.grid, h) * min(args.grid, w)
        k = args.k if args.k >= 1 else float(args.k)
        if args.what == "chunked":
            def run() -> None:
                R.pseudo_label_grid(qf, rf, rl, NUM_CLASSES - 1, True, args.grid, k)
        else:
            g = (min(args.grid, h), min(args.grid, w))
            q = R.resize_nearest(qf, g).movedim(1, -1).reshape(-1, f)
            r = R.resize_nearest(rf, g).movedim(1, -1).reshape(-1, f)
            lab = R.resize_nearest(rl, g).movedim(1, -1).reshape(-1, NUM_CLASSES - 1)
            member, _ = R.membership(lab, NUM_CLASSES - 1, True)
            kk = R.resolve_k(k, n_refs)
            est = q.shape[0] * (n_refs * 4 + kk * (4 + 8 + NUM_CLASSES + 4)) / 2**30
            if est > NAIVE_LIMIT_GB and not cuda:
                return {"skipped": f"estimated {est:.1f} GB"}

            def run() -> None:
                R.brute_force_reference(q, r, member, kk)
    run()  # warm-up (allocator, kernels)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = _rss_mb()
        peak0 = _peak_mb()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    if cuda:
        mem = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    else:
        # the warm-up call already reached the call's peak; large buffers go back to the OS when freed,
        # so the peak over the resident size after the warm-up is the call's own working memory
        mem = max(0.0, max(_peak_mb(), peak0) - base)
    return {"seconds": min(times), "peak_mb": mem}


def _real_features(args: argparse.Namespace, dev: Any) -> tuple[Any, Any, Any]:
    """Query/reference features of the ``small`` UNet (seeded init, 100 supervised steps) on the
    first images of a multi-label dataset folder resized to the patch, with its real masks.

    Random Gaussian features (the default) have no spatial structure: the worst case for the search's
    sub-block bounds. Network features of real images are smooth in space, as in training.
    """
    import numpy as np
    import torch
    from skimage.transform import resize

    from napari_labelfx.core.normalize import percentile_normalise
    from napari_labelfx.evaluation.dataset import load_dataset
    from napari_labelfx.methods import losses
    from napari_labelfx.models import PRESETS, ModelConfig, build_model

    ds = load_dataset(args.data)
    if not ds.multilabel or len(ds.classes) != NUM_CLASSES - 1:
        raise SystemExit(f"--data must be a multi-label set with {NUM_CLASSES - 1} classes (cxr_jsrt)")
    n = args.pool + args.unlabelled
    size = (args.patch, args.patch)
    imgs, masks = [], []
    for stem in ds.stems[:max(n, 8)]:
        smp = ds.load(stem)
        img = resize(smp.image[:1].astype(np.float32), (1, *size), order=1, anti_aliasing=True)
        imgs.append(percentile_normalise(img))
        masks.append(resize(smp.mask, (smp.mask.shape[0], *size), order=0, preserve_range=True).astype(np.uint8))
    x = torch.as_tensor(np.stack(imgs), dtype=torch.float32, device=dev)
    y = torch.as_tensor(np.stack(masks), device=dev)
    torch.manual_seed(0)
    net = build_model(ModelConfig.from_dict({**PRESETS[args.preset], "spatial_dims": 2, "in_channels": 1,
                                             "num_classes": NUM_CLASSES - 1, "multilabel": True})).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(100):  # features of a network that has begun to learn the organs
        out = net(x)
        loss = losses.bce_with_ignore(out.logits, y) + losses.soft_dice_loss_multilabel(out.logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        feats = net(x[:n]).features
    return feats[args.pool:], feats[:args.pool], y[:args.pool]


def _child(what: str, p: int, k: float, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", what, "--pool", str(p), "--k", str(k), "--device", args.device,
           "--patch", str(args.patch), "--batch", str(args.batch), "--unlabelled", str(args.unlabelled),
           "--grid", str(args.grid), "--preset", args.preset, "--features", str(args.features),
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if args.data:
        cmd += ["--data", args.data]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4, help="labelled patches of a training step")
    ap.add_argument("--unlabelled", type=int, default=2, help="unlabelled patches (queries) per step")
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--features", type=int, default=64, help="feature channels of the search (paper: 64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=None,
                    help="cxr_jsrt folder: search network features of real images with their masks "
                    "(default: random Gaussian features and labels, the worst case)")
    ap.add_argument("--pools", default="1,3,5")
    ap.add_argument("--ks", default="0.25,0.5,7000")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pool", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=float, default=7000, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.what = args.child
        if args.k >= 1:
            args.k = int(args.k)
        print(json.dumps(_measure(args)))
        return 0
    rows = []
    pools = [int(v) for v in args.pools.split(",")]
    ks = [float(v) for v in args.ks.split(",")]
    steps = {p: _child("step", p, 7000, args) for p in pools}
    for p in pools:
        for k in ks:
            row = {"p": p, "k": k, "step": steps[p], "chunked": _child("chunked", p, k, args),
                   "naive": _child("naive", p, k, args)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| p | k | training step s | chunked s | chunked / step | chunked MB | naive s | naive MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        st, ch, nv = r["step"], r["chunked"], r["naive"]
        ratio = ch["seconds"] / st["seconds"] if "seconds" in ch and "seconds" in st else float("nan")
        kdesc = f"{int(r['k'] * 100)}%" if r["k"] < 1 else str(int(r["k"]))
        nv_s = f"{nv['seconds']:.3f}" if "seconds" in nv else nv.get("skipped", nv.get("error", "?"))
        nv_m = f"{nv['peak_mb']:.0f}" if "peak_mb" in nv else "-"
        print(f"| {r['p']} | {kdesc} | {st.get('seconds', float('nan')):.3f} | {ch.get('seconds', float('nan')):.3f} | "
              f"{ratio:.2f} | {ch.get('peak_mb', float('nan')):.0f} | {nv_s} | {nv_m} |")
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"settings": {k: v for k, v in vars(args).items() if k not in ("child", "what")},
                       "rows": rows}, fh, indent=1)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
