"""Datasets for search and training, held in memory as tensors at the proxy resolution.

`--data` names one of:

    digits              (default) scikit-learn's embedded `load_digits`: 1,797 8×8 grey digits,
                        10 classes, shipped inside scikit-learn (no download); upsampled
                        bilinearly to the proxy resolution and replicated to 3 channels
    digits:augment=K    the same with K shifted copies (±1 pixel of the 8×8 image, zero-filled)
                        of every train image; the test split is left as is, and a copy always
                        lands in the same search split as its original (`Dataset.groups`)
    cifar10:DIR         CIFAR-10 in its standard python-pickle layout (DIR/data_batch_1..5,
                        DIR/test_batch); DIR may also be given bare if it holds those files
    imagefolder:DIR     DIR/<class>/<image>, optionally DIR/train/... and DIR/val/...; any
                        folder of class sub-folders is also recognised bare

Every source yields a fixed train/test split (the dataset's own, or a seeded 80/20 split for
digits and flat image folders). Search then splits the train part again: `w_fraction` (FBNet:
80%) trains the weights, the rest — the architecture split — the architecture parameters. A run
reports the found arch's accuracy on the test split (`test_accuracy`) and on the architecture
split (`arch_split_accuracy`: θ was fitted on it, so it is not held out). Inputs are normalised with the train part's per-channel mean and std.
Images are resized once, at load time, so an epoch is tensor slicing only.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Dataset", "DataError", "load_data", "batches", "DATA_SOURCES"]

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


class DataError(ValueError):
    """A dataset cannot be found or read; the message says what was expected where."""


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors (N, 3, R, R) float32 normalised, labels int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    groups: torch.Tensor | None = None  # per train image: the original it was copied from

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_train(
        self, w_fraction: float, seed: int
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Seeded split of the train part: (weights part, architecture part)."""
        if not 0.0 < w_fraction < 1.0:
            raise DataError(f"w_fraction must be in (0, 1), got {w_fraction}")
        n = len(self.y_train) if self.groups is None else int(self.groups.max()) + 1
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        k = int(round(n * w_fraction))
        if k == 0 or k == n:
            raise DataError(f"{n} training images are too few to split {w_fraction:.0%}/rest")
        a, b = perm[:k], perm[k:]
        if self.groups is not None:  # whole groups: no copy of a validation image trains weights
            in_a = torch.zeros(n, dtype=torch.bool)
            in_a[a] = True
            member = in_a[self.groups.cpu()]
            a, b = member.nonzero().flatten(), (~member).nonzero().flatten()
        return (self.x_train[a], self.y_train[a]), (self.x_train[b], self.y_train[b])

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.classes,
            self.groups,
        )


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    min_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches; shuffled with `generator` when one is given. A last batch smaller than
    `min_size` is dropped: training loops pass 2, because train-mode batch norm cannot normalise
    a single image at the proxy's 1×1 spatial size."""
    n = len(y)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order.to(y.device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        if len(idx) < min_size:
            break
        yield x[idx], y[idx]


# --- sources ---------------------------------------------------------------------------------------
_Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]  # uint8/float NCHW


def _digits(_arg: str, split_seed: int) -> _Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    y = d.target.astype(np.int64)
    tr, te = _split_indices(len(y), 0.8, split_seed)
    return x[tr], y[tr], x[te], y[te], tuple(str(c) for c in d.target_names)


def _cifar10(arg: str, _split_seed: int) -> _Raw:
    root = Path(arg)
    if not (root / "data_batch_1").exists() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = root / name
        try:
            with path.open("rb") as f:
                d = pickle.load(f, encoding="latin1")
        except OSError as e:
            raise DataError(
                f"cannot read CIFAR-10 file {path}: {e.strerror}; expected the python-pickle "
                "layout (data_batch_1..5, test_batch, batches.meta)"
            ) from None
        return np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32), np.asarray(d["labels"])

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    x_te, y_te = read("test_batch")
    classes = tuple(str(i) for i in range(10))
    meta = root / "batches.meta"
    if meta.exists():
        with meta.open("rb") as f:
            classes = tuple(pickle.load(f, encoding="latin1")["label_names"])
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    return x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), classes


def _imagefolder(arg: str, split_seed: int) -> _Raw:
    root = Path(arg)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    if (root / "train").is_dir() and ((root / "val").is_dir() or (root / "test").is_dir()):
        test_dir = root / "val" if (root / "val").is_dir() else root / "test"
        classes = _classes(root / "train")
        x_tr, y_tr = _read_images(root / "train", classes)
        x_te, y_te = _read_images(test_dir, classes)
        return x_tr, y_tr, x_te, y_te, classes
    classes = _classes(root)
    x, y = _read_images(root, classes)
    tr, te = _split_indices(len(y), 0.8, split_seed)
    return x[tr], y[tr], x[te], y[te], classes


def _classes(root: Path) -> tuple[str, ...]:
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise DataError(f"{root} needs at least two class sub-folders (DIR/<class>/<image>)")
    return classes


def _read_images(root: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """All images under root/<class>/ as uint8 (N, 3, S, S), S = the first image's size (each
    image is resized to it; the final resize to the proxy resolution happens in `load_data`)."""
    from PIL import Image

    xs, ys, size = [], [], None
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        for path in files:
            with Image.open(path) as im:
                im = im.convert("RGB")
                size = size or (min(im.size[0], 256),) * 2
                xs.append(np.asarray(im.resize(size, Image.BILINEAR), np.uint8).transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise DataError(f"no images ({', '.join(_IMAGE_SUFFIXES)}) found under {root}/<class>/")
    return np.stack(xs), np.asarray(ys, np.int64)


def _split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(n * fraction))
    return perm[:k], perm[k:]


DATA_SOURCES: dict[str, Callable[[str, int], _Raw]] = {
    "digits": _digits,
    "cifar10": _cifar10,
    "imagefolder": _imagefolder,
}


def _parse(spec: str) -> tuple[str, str]:
    kind, sep, arg = spec.partition(":")
    if sep and kind in DATA_SOURCES:
        return kind, arg
    if spec in DATA_SOURCES:
        return spec, ""
    path = Path(spec)
    if (path / "data_batch_1").exists() or (path / "cifar-10-batches-py").is_dir():
        return "cifar10", spec
    if path.is_dir():
        return "imagefolder", spec
    raise DataError(
        f"unknown dataset {spec!r}; use 'digits' (embedded), 'cifar10:DIR' (python-pickle "
        "layout) or 'imagefolder:DIR' (DIR/<class>/<image>)"
    )


def load_data(
    spec: str = "digits",
    *,
    resolution: int = 32,
    subset: int | None = None,
    split_seed: int = 0,
) -> Dataset:
    """Load `spec` at `resolution`; `subset` keeps a seeded sample of that many train images
    (and proportionally as many test images, at least 1)."""
    kind, arg = _parse(spec)
    x_tr, y_tr, x_te, y_te, classes = DATA_SOURCES[kind](arg, split_seed)
    if subset is not None:
        if subset <= 0:
            raise DataError(f"subset must be positive, got {subset}")
        rng = np.random.default_rng(split_seed + 1)
        n_te = max(1, int(round(subset * len(y_te) / max(1, len(y_tr)))))
        keep_tr = np.sort(rng.permutation(len(y_tr))[:subset])
        keep_te = np.sort(rng.permutation(len(y_te))[:n_te])
        x_tr, y_tr, x_te, y_te = x_tr[keep_tr], y_tr[keep_tr], x_te[keep_te], y_te[keep_te]
    groups = None
    if kind == "digits" and arg:
        x_tr, y_tr, groups = _augment_digits(x_tr, y_tr, arg, split_seed)
    xt_tr, xt_te = _prepare(x_tr, resolution), _prepare(x_te, resolution)
    mean = xt_tr.mean(dim=(0, 2, 3), keepdim=True)
    std = xt_tr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    name = kind if not arg else f"{kind}:{arg}"
    log.info("data %s: %d train, %d test, %d classes at %d×%d", name, len(y_tr), len(y_te),
             len(classes), resolution, resolution)  # fmt: skip
    return Dataset(
        name,
        (xt_tr - mean) / std,
        torch.from_numpy(y_tr),
        (xt_te - mean) / std,
        torch.from_numpy(y_te),
        classes,
        None if groups is None else torch.from_numpy(groups),
    )


def _augment_digits(
    x: np.ndarray, y: np.ndarray, arg: str, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`augment=K`: the originals, then K copies each shifted by one pixel (a random one of the 8
    neighbouring offsets, zero-filled); returns images, labels and each image's original index."""
    key, _, value = arg.partition("=")
    if key != "augment" or not value.isdigit() or int(value) < 1:
        raise DataError(f"digits takes 'digits' or 'digits:augment=K' (K ≥ 1 copies), got 'digits:{arg}'")
    rng = np.random.default_rng(seed + 2)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    n, (h, w) = len(y), x.shape[-2:]
    copies = [x]
    for _ in range(int(value)):
        shifted = np.zeros_like(x)
        for i, o in enumerate(rng.integers(len(offsets), size=n)):
            dy, dx = offsets[o]
            shifted[i, :, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
                i, :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
            ]
        copies.append(shifted)
    k = len(copies)
    return np.concatenate(copies), np.tile(y, k), np.tile(np.arange(n), k)


def _prepare(x: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 or [0,1] float (N, C, H, W) → float32 (N, 3, R, R) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.shape[-1] != resolution or t.shape[-2] != resolution:
        t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return t.contiguous()
