"""Memory and speed of streaming an image folder: a search's peak memory against the folder's size,
and the loader's images/s.

    python -m bench.data_loader --lut LUT [--images 1000,4000] [--size 256] [--workers 2]
        [--root DIR] [--resolution 32] [--torch-threads 1]
    python -m bench.data_loader --make DIR --images 1300 --classes 10 [--layout imagenet]

Phases. (1) A folder of generated JPEGs (SIZE×SIZE, one smooth class-coloured pattern plus
noise per image; flat DIR/<class>/<image> with a seeded 80/20 test split) for each count, made
once under --root and reused. (2) For each count, one `search.run` process — FBNet, one epoch,
no warm-up, no training afterwards — while its process tree (the search and its DataLoader
workers) is sampled every 50 ms from /proc: the peak of the summed resident set (RSS, shared pages
counted in every process, what `top` adds up) and of the summed proportional set (PSS, shared
pages split between the processes sharing them). (3) The loader alone: one augmented pass over
the train split at the proxy resolution, with 0 and with --workers processes, images/s side by
side. The printed ratio and difference between the largest and the smallest folder are the
point: streaming keeps memory flat whatever the folder holds.

`--make DIR` only writes a folder (`--layout imagenet`: DIR/train/<wnid>/… and DIR/val/<wnid>/…
with synset-like class names, as ImageNet is laid out) and exits.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hwnas.flags import add_verbose, run_main
from search.data import batches, load_data

__all__ = ["make_image_folder", "tree_memory_mb", "peak_memory", "main"]


def make_image_folder(
    root: str | Path, images: int, classes: int = 10, *, size: int = 256, seed: int = 0,
    layout: str = "flat", val_fraction: float = 0.2,
) -> Path:
    """`images` JPEGs of size×size in `classes` class folders (flat: root/<class>/; imagenet:
    root/train/<class>/ and root/val/<class>/ with `val_fraction` of each class in val). Each
    class has its own colour and stripe orientation, so a network can learn them. Idempotent:
    an existing complete folder is kept."""
    from PIL import Image

    root = Path(root)
    done = root / ".complete"
    if done.exists() and done.read_text() == f"{images} {classes} {size} {seed} {layout}":
        return root
    if layout not in ("flat", "imagenet"):
        raise ValueError(f"layout must be flat or imagenet, got {layout!r}")
    rng = np.random.default_rng(seed)
    names = [f"n{1440764 + 7919 * c:08d}" if layout == "imagenet" else f"class{c:03d}" for c in range(classes)]
    colours = rng.uniform(40, 215, (classes, 3))
    angles = rng.uniform(0, np.pi, classes)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(images):
        c = i % classes
        k = i // classes  # index within the class
        if layout == "imagenet":
            per_class = -(-images // classes)
            part = "val" if k < round(per_class * val_fraction) else "train"
            folder = root / part / names[c]
        else:
            folder = root / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        a = angles[c] + rng.normal(0, 0.2)
        stripes = np.sin(2 * np.pi * (4 + 2 * rng.random()) * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6.3))
        img = colours[c][None, None, :] + 30 * stripes[..., None] + rng.normal(0, 12, (size, size, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i:06d}.jpg", quality=90)
    done.write_text(f"{images} {classes} {size} {seed} {layout}")
    return root


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) summed over `pid` and all its descendants, MB (from /proc; Linux)."""
    rss = pss = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        stack += _children(p)
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:  # the process ended between listing and reading
            continue
    return rss / 1024, pss / 1024


def peak_memory(cmd: list[str], *, interval_s: float = 0.05, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run `cmd`, sampling its process tree; peak RSS / PSS (MB), wall seconds, exit code."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        peak_rss = peak_pss = 0.0
        while proc.poll() is None:
            rss, pss = tree_memory_mb(proc.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(interval_s)
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read().decode()[-3000:]}")
    return {"peak_rss_mb": peak_rss, "peak_pss_mb": peak_pss, "wall_s": time.perf_counter() - t0}


def loader_rate(folder: Path, resolution: int, workers: int, batch_size: int = 64) -> float:
    """Images/s of one augmented (shuffled) pass over the train split."""
    data = load_data(f"imagefolder:{folder}", resolution=resolution, workers=workers)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    n = sum(len(yb) for _, yb in batches(data.x_train, data.y_train, batch_size, generator=gen))
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.data_loader", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--lut", help="LUT of the searches (e.g. luts/DEVICE/fbnet/executorch-t1)")
    p.add_argument("--images", default="1000,4000", help="folder sizes, comma-separated")
    p.add_argument("--classes", type=int, default=10, help="classes of the generated folders (default 10)")
    p.add_argument("--size", type=int, default=256, help="side of the generated JPEGs")
    p.add_argument("--folders", default=os.path.join(tempfile.gettempdir(), "hwnas-bench-folders"),
                   help="where the generated folders are kept between runs (default: in the temp dir)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes")
    p.add_argument("--resolution", type=int, default=32, help="proxy resolution")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--make", metavar="DIR", help="only write a folder of --images (one count) JPEGs to DIR")
    p.add_argument("--layout", choices=["flat", "imagenet"], default="flat", help="with --make")
    add_verbose(p)
    args = p.parse_args(argv)
    try:
        counts = [int(c) for c in args.images.split(",")]
    except ValueError:
        p.error(f"--images takes comma-separated counts, got {args.images!r}")
    if args.make:
        if len(counts) != 1:
            p.error("--make writes one folder: give one --images count")
        make_image_folder(args.make, counts[0], args.classes, size=args.size, layout=args.layout)
        print(f"wrote {counts[0]} {args.size}×{args.size} JPEGs in {args.classes} classes ({args.layout}) to {args.make}")
        return 0
    if not args.lut:
        p.error("--lut is required (the searches' LUT)")
    torch.set_num_threads(args.torch_threads)
    rows = []
    for n in counts:
        folder = make_image_folder(Path(args.folders) / f"{n}x{args.size}-c{args.classes}", n, args.classes, size=args.size)
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "search.run", "--lut", args.lut, "--data", f"imagefolder:{folder}",
                   "--workers", str(args.workers), "--resolution", str(args.resolution), "--epochs", "1",
                   "--warmup-epochs", "0", "--train-epochs", "0", "--batch-size", str(args.batch_size),
                   "--torch-threads", str(args.torch_threads), "--out", out]  # fmt: skip
            mem = peak_memory(cmd)
        rate0 = loader_rate(folder, args.resolution, 0, args.batch_size)
        rate_w = loader_rate(folder, args.resolution, args.workers, args.batch_size)
        rows.append((n, mem, rate0, rate_w))
    print(f"one-epoch FBNet search on generated {args.size}×{args.size} JPEG folders, proxy {args.resolution}×"
          f"{args.resolution}, {args.workers} loader workers, {args.torch_threads} torch thread(s)")
    print(f"{'images':>7s} {'peak RSS MB':>12s} {'peak PSS MB':>12s} {'search s':>9s} "
          f"{'img/s w=0':>10s} {f'img/s w={args.workers}':>10s} {'× w':>6s}")
    for n, mem, r0, rw in rows:
        print(f"{n:7d} {mem['peak_rss_mb']:12.0f} {mem['peak_pss_mb']:12.0f} {mem['wall_s']:9.1f} "
              f"{r0:10.0f} {rw:10.0f} {rw / r0:6.2f}")
    (n_lo, lo, _, _), (n_hi, hi, _, _) = rows[0], rows[-1]
    print(f"{n_hi} vs {n_lo} images: peak RSS {hi['peak_rss_mb'] - lo['peak_rss_mb']:+.0f} MB "
          f"(×{hi['peak_rss_mb'] / lo['peak_rss_mb']:.3f}), peak PSS {hi['peak_pss_mb'] - lo['peak_pss_mb']:+.0f} MB "
          f"(×{hi['peak_pss_mb'] / lo['peak_pss_mb']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
