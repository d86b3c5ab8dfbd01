"""Datasets for search and training.

`--data` names one of:

    digits              (default) scikit-learn's embedded `load_digits`: 1,797 8×8 grey digits,
                        10 classes, shipped inside scikit-learn (no download); upsampled
                        bilinearly to the proxy resolution and replicated to 3 channels
    digits:augment=K    the same with K shifted copies (±1 pixel of the 8×8 image, zero-filled)
                        of every train image; the test split is left as is, and a copy always
                        lands in the same search split as its original (`Dataset.groups`)
    cifar10:DIR         CIFAR-10 in its standard python-pickle layout (DIR/data_batch_1..5,
                        DIR/test_batch); DIR may also be given bare if it holds those files
    cifar100:DIR        CIFAR-100 in its python-pickle layout (DIR/train, DIR/test, DIR/meta;
                        the 100 fine labels)
    imagefolder:DIR     DIR/<class>/<image>, optionally DIR/train/... and DIR/val/...; any
                        folder of class sub-folders is also recognised bare

Every source yields a fixed train/test split (the dataset's own, or a seeded 80/20 split for
digits and flat image folders). `classes=K` keeps a seeded sample of K classes (FBNet's
ImageNet-100 is `imagefolder:IMAGENET --classes 100`); `Dataset.classes` names them. Search then
splits the train part again: `w_fraction` (FBNet: 80%) trains the weights, the rest — the
validation split — the architecture parameters. A run reports the found arch's accuracy on the
validation split (`val_accuracy`) and on the test split (`test_accuracy`).

Memory. Digits are held as float tensors at the proxy resolution. CIFAR is held as its uint8
pixels (150 MB for CIFAR-10) and an image folder as its file names only: both are `ImageSet`s,
turned into normalised float batches when a batch is asked for. Image files are decoded a batch
at a time by a `torch.utils.data.DataLoader` with `workers` processes, so memory does not grow
with the folder (ImageNet-1k streams like a folder of a thousand images).

Augmentation (the standard one per family) applies to shuffled batches — the ones that train
weights or θ — and never to ordered ones, which evaluate or recalibrate batch norm:

    image folders   train: random resized crop (scale 0.08–1, ratio 3/4–4/3) + horizontal flip;
                    evaluate: resize the short side to R/0.875, center crop R×R;
                    normalised with ImageNet's mean and std
    CIFAR           train: pad 4 (scaled with R/32; black) + random R×R crop + horizontal flip;
                    evaluate: the image at R×R; normalised with the train split's mean and std
    digits          none (`digits:augment=K` is its own, fixed augmentation)

A shuffled pass draws one seed from its generator and derives every image's crop and flip from
it and the image's position, so a run is repeatable whatever the number of workers.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Dataset", "DataError", "ImageSet", "load_data", "batches", "materialize", "DATA_SOURCES", "add_data_arguments"]

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


class DataError(ValueError):
    """A dataset cannot be found or read; the message says what was expected where."""


@dataclass(frozen=True)
class Dataset:
    """Train and test images (N, 3, R, R) float32 normalised — tensors, or `ImageSet`s that make
    such batches on demand — and labels int64."""

    name: str
    x_train: Images
    y_train: torch.Tensor
    x_test: Images
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


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the normalisation of image folders (torchvision's)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP = 0.875  # evaluation: resize the short side to R / 0.875, center crop R (224 of 256)
RRC_SCALE, RRC_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # random resized crop (Inception, ResNet, FBNet)
CIFAR_PAD = 4  # pixels of padding at 32×32 before the random crop


@dataclass(frozen=True)
class _Source:
    """What an `ImageSet` reads from: image files, or uint8 pixels (N, 3, H, W) in memory."""

    family: str  # "imagenet" (files) or "cifar" (pixels)
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    paths: tuple[str, ...] = ()
    pixels: torch.Tensor | None = None
    workers: int = 0  # DataLoader processes that decode files (0: in this process)


class ImageSet:
    """Images made into normalised float batches (B, 3, R, R) only when a batch is asked for.

    It stands where a tensor of images would: `len`, `shape`, indexing with an index tensor,
    array or slice (a view: no image is read), `.to(device)` (where batches will be put). Batches
    come from `stream` (what `batches` uses), `split` (ordered chunks, like `Tensor.split`) and
    `tensor` (everything at once, for a few calibration images)."""

    def __init__(self, source: _Source, index: np.ndarray | None = None, device: torch.device | str = "cpu"):
        n = len(source.paths) if source.pixels is None else len(source.pixels)
        self.source = source
        self.index = np.arange(n) if index is None else np.asarray(index, np.int64)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        r = self.source.resolution
        return (len(self), 3, r, r)

    def __getitem__(self, key: Any) -> "ImageSet":
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return ImageSet(self.source, self.index[key], self.device)

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.source, self.index, device)

    def cpu(self) -> "ImageSet":
        return self.to("cpu")

    def tensor(self) -> torch.Tensor:
        """Every image of the set, evaluation transform, as one tensor on `device`."""
        parts = list(self.split(256))
        r = self.source.resolution
        return torch.cat(parts) if parts else torch.empty(0, 3, r, r, device=self.device)

    def split(self, size: int) -> "_Batches":
        """Ordered batches of `size` (the last may be smaller), evaluation transform."""
        chunks = [list(range(i, min(i + size, len(self)))) for i in range(0, len(self), size)]
        return _Batches(self, chunks, None)

    def stream(self, chunks: Sequence[Sequence[int]], seed: int | None) -> Iterator[torch.Tensor]:
        """One batch per chunk of positions in this set; `seed` None: evaluation transform,
        else the training augmentation drawn from (seed, position in the pass)."""
        return iter(_Batches(self, [list(map(int, c)) for c in chunks], seed))


class _Batches:
    """An iterable of batches of an `ImageSet` (re-iterable; each pass reads the images again)."""

    def __init__(self, images: ImageSet, chunks: list[list[int]], seed: int | None):
        self.images, self.chunks, self.seed = images, chunks, seed

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[torch.Tensor]:
        src, dev = self.images.source, self.images.device
        mean = torch.tensor(src.mean, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(src.std, device=dev).view(1, 3, 1, 1)
        if src.pixels is not None:
            for k, chunk in enumerate(self.chunks):
                rows = self.images.index[chunk]
                yield _cifar_batch(src, rows, mean, std, dev, None if self.seed is None else (self.seed, k))
            return
        # each key: (file, augmentation seed or -1); the chunk's position keeps seeds apart
        keys = []
        start = 0
        for chunk in self.chunks:
            keys.append([(int(self.images.index[i]), -1 if self.seed is None else _mix(self.seed, start + j))
                         for j, i in enumerate(chunk)])  # fmt: skip
            start += len(chunk)
        # the loader's own generator: its worker base seed (unused) is not drawn from torch's global
        # RNG, which the search's own draws (Gumbel noise, sampled paths) use
        loader = torch.utils.data.DataLoader(
            _Decoder(src), batch_sampler=keys, num_workers=src.workers,
            pin_memory=dev.type == "cuda", generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        it = iter(loader)
        while True:
            try:
                u8 = next(it)
            except StopIteration:
                return
            except DataError as e:  # from a worker: its message is the last line of the traceback
                raise DataError(str(e).strip().splitlines()[-1].removeprefix(f"{DataError.__module__}.DataError: ")) from None
            x = u8.to(dev, non_blocking=True).float().div_(255.0)
            yield (x - mean) / std


def _mix(seed: int, i: int) -> int:
    return (seed * 1_000_003 + i) % (2**63)


class _Decoder(torch.utils.data.Dataset):
    """Reads and transforms one image file into uint8 (3, R, R); runs in the loader's workers."""

    def __init__(self, source: _Source):
        self.paths, self.r = source.paths, source.resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        i, seed = key
        try:
            return self._read(self.paths[i], seed)
        except (OSError, ValueError) as e:  # unreadable, truncated, not an image
            raise DataError(f"cannot read image {self.paths[i]}: {e}; remove or replace the file") from None

    def _read(self, path: str, seed: int) -> torch.Tensor:
        from PIL import Image

        r = self.r
        with Image.open(path) as im:
            if seed < 0:
                # let JPEG decode at a reduced scale no smaller than the resize asks
                im.draft("RGB", (math.ceil(r / EVAL_CROP),) * 2)
                im = im.convert("RGB")
                w, h = im.size
                side = min(w, h) * EVAL_CROP
                box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
                out = im.resize((r, r), Image.BILINEAR, box=box)
            else:
                # a crop of the smallest scale still keeps R pixels across
                im.draft("RGB", (math.ceil(r / math.sqrt(RRC_SCALE[0])),) * 2)
                im = im.convert("RGB")
                rng = np.random.default_rng(seed)
                box = _random_resized_box(im.size, rng)
                out = im.resize((r, r), Image.BILINEAR, box=box)
                if rng.random() < 0.5:
                    out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(out, np.uint8).transpose(2, 0, 1).copy())


def _random_resized_box(size: tuple[int, int], rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A crop of `RRC_SCALE` of the area and `RRC_RATIO` aspect (10 tries, as Inception's
    preprocessing does), else the central crop with the ratio clamped into range."""
    w, h = size
    area = w * h
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*RRC_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        cw, ch = math.sqrt(target * ratio), math.sqrt(target / ratio)
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            return (x0, y0, x0 + cw, y0 + ch)
    ratio = min(max(w / h, RRC_RATIO[0]), RRC_RATIO[1])
    cw, ch = (w, w / ratio) if w / h < ratio else (h * ratio, h)
    return ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)


def _cifar_batch(
    src: _Source, rows: np.ndarray, mean: torch.Tensor, std: torch.Tensor, dev: torch.device,
    seed: tuple[int, int] | None,
) -> torch.Tensor:
    """Pixels → normalised float at R×R; with a seed, pad + random crop + flip per image."""
    assert src.pixels is not None
    r = src.resolution
    x = src.pixels[torch.from_numpy(rows)].to(dev, non_blocking=True).float().div_(255.0)
    if x.shape[-1] != r or x.shape[-2] != r:
        x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
    if seed is not None:
        pad = max(1, round(CIFAR_PAD * r / 32))
        g = torch.Generator().manual_seed(_mix(*seed))
        dy, dx = torch.randint(0, 2 * pad + 1, (2, len(x)), generator=g).tolist()
        flip = (torch.rand(len(x), generator=g) < 0.5).tolist()
        padded = F.pad(x, (pad, pad, pad, pad))  # black, as torchvision pads before normalising
        x = torch.stack([padded[i, :, dy[i] : dy[i] + r, dx[i] : dx[i] + r] for i in range(len(x))])
        flipped = torch.tensor(flip, device=dev)
        x = torch.where(flipped.view(-1, 1, 1, 1), x.flip(-1), x)
    return (x - mean) / std


Images = torch.Tensor | ImageSet


def materialize(x: Images) -> torch.Tensor:
    """`x` as a tensor (an `ImageSet` read in full with the evaluation transform)."""
    return x.tensor() if isinstance(x, ImageSet) else x


def default_workers() -> int:
    """Decoding processes per loader: the cores but one, at most 8 (0 on a single core)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def batches(
    x: Images,
    y: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    min_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches; shuffled with `generator` when one is given. A last batch smaller than
    `min_size` is dropped: training loops pass 2, because train-mode batch norm cannot normalise
    a single image at the proxy's 1×1 spatial size. Shuffled batches of an `ImageSet` are
    augmented (they train), ordered ones are not (they evaluate)."""
    n = len(y)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order.to(y.device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    chunks = [order[i : i + batch_size] for i in range(0, stop, batch_size)]
    chunks = chunks[: next((k for k, c in enumerate(chunks) if len(c) < min_size), len(chunks))]
    if isinstance(x, ImageSet):  # decoded a batch at a time, augmented when shuffled
        yield from zip(x.stream([c.tolist() for c in chunks], augment_seed(generator)), (y[c] for c in chunks))
        return
    for idx in chunks:
        yield x[idx], y[idx]


def augment_seed(generator: torch.Generator | None) -> int | None:
    """The seed of a pass's augmentation: drawn from the pass's generator (None: no augmentation)."""
    if generator is None:
        return None
    return int(torch.randint(0, 2**62, (1,), generator=generator))


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
    root = _cifar_root(arg, "data_batch_1", "cifar-10-batches-py")
    parts = [_read_cifar(root / f"data_batch_{i}", "labels", "CIFAR-10") for i in range(1, 6)]
    x_te, y_te = _read_cifar(root / "test_batch", "labels", "CIFAR-10")
    classes = tuple(str(i) for i in range(10))
    if (root / "batches.meta").exists():
        classes = tuple(_unpickle(root / "batches.meta", "CIFAR-10")["label_names"])
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_te, y_te, classes


def _cifar100(arg: str, _split_seed: int) -> _Raw:
    root = _cifar_root(arg, "train", "cifar-100-python")
    x_tr, y_tr = _read_cifar(root / "train", "fine_labels", "CIFAR-100")
    x_te, y_te = _read_cifar(root / "test", "fine_labels", "CIFAR-100")
    classes = tuple(str(i) for i in range(100))
    if (root / "meta").exists():
        classes = tuple(_unpickle(root / "meta", "CIFAR-100")["fine_label_names"])
    return x_tr, y_tr, x_te, y_te, classes


def _cifar_root(arg: str, first: str, folder: str) -> Path:
    root = Path(arg)
    if not (root / first).exists() and (root / folder).is_dir():
        root = root / folder
    return root


def _unpickle(path: Path, what: str) -> dict:
    layout = ("data_batch_1..5, test_batch, batches.meta" if what == "CIFAR-10" else "train, test, meta")
    try:
        with path.open("rb") as f:
            return pickle.load(f, encoding="latin1")
    except OSError as e:
        raise DataError(f"cannot read {what} file {path}: {e.strerror}; expected the python-pickle "
                        f"layout ({layout})") from None  # fmt: skip
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"{what} file {path} is not a python pickle of the expected layout: {e}") from None


def _read_cifar(path: Path, label_key: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path, what)
    if "data" not in d or label_key not in d:
        raise DataError(f"{what} file {path} lacks 'data' or '{label_key}'")
    return np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32), np.asarray(d[label_key], np.int64)


def _imagefolder(arg: str, split_seed: int) -> _Raw:
    """File names (a str array) and labels; the images are read a batch at a time later."""
    root = Path(arg)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    if (root / "train").is_dir() and ((root / "val").is_dir() or (root / "test").is_dir()):
        test_dir = root / "val" if (root / "val").is_dir() else root / "test"
        classes = _classes(root / "train")
        x_tr, y_tr = _list_images(root / "train", classes)
        x_te, y_te = _list_images(test_dir, classes)
        return x_tr, y_tr, x_te, y_te, classes
    classes = _classes(root)
    x, y = _list_images(root, classes)
    tr, te = _split_indices(len(y), 0.8, split_seed)
    return x[tr], y[tr], x[te], y[te], classes


def _classes(root: Path) -> tuple[str, ...]:
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise DataError(f"{root} needs at least two class sub-folders (DIR/<class>/<image>)")
    return classes


def _list_images(root: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every image file under root/<class>/ (sorted) and its label; a missing class folder
    (a validation part that lacks a class) contributes nothing."""
    paths: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        if not (root / cls).is_dir():
            continue
        files = sorted(str(p) for p in (root / cls).rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"no images ({', '.join(_IMAGE_SUFFIXES)}) found under {root}/<class>/")
    return np.asarray(paths, dtype=object), np.asarray(labels, np.int64)


def _split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(n * fraction))
    return perm[:k], perm[k:]


DATA_SOURCES: dict[str, Callable[[str, int], _Raw]] = {
    "digits": _digits,
    "cifar10": _cifar10,
    "cifar100": _cifar100,
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
    if (path / "cifar-100-python").is_dir() or ((path / "train").is_file() and (path / "meta").is_file()):
        return "cifar100", spec
    if path.is_dir():
        return "imagefolder", spec
    raise DataError(
        f"unknown dataset {spec!r}; use 'digits' (embedded), 'cifar10:DIR' or 'cifar100:DIR' "
        "(python-pickle layout) or 'imagefolder:DIR' (DIR/<class>/<image>)"
    )


def load_data(
    spec: str = "digits",
    *,
    resolution: int = 32,
    subset: int | None = None,
    split_seed: int = 0,
    classes: int | None = None,
    workers: int | None = None,
) -> Dataset:
    """Load `spec` at `resolution`. `classes` keeps a seeded sample of that many classes (sorted by
    name, relabelled 0..K−1); `subset` keeps a seeded sample of that many train images (and
    proportionally as many test images, at least 1); `workers` processes decode image files
    (default `default_workers()`)."""
    kind, arg = _parse(spec)
    x_tr, y_tr, x_te, y_te, names = DATA_SOURCES[kind](arg, split_seed)
    if classes is not None:
        x_tr, y_tr, x_te, y_te, names = _keep_classes(x_tr, y_tr, x_te, y_te, names, classes, split_seed)
    if subset is not None:
        if subset <= 0:
            raise DataError(f"subset must be positive, got {subset}")
        rng = np.random.default_rng(split_seed + 1)
        n_te = max(1, int(round(subset * len(y_te) / max(1, len(y_tr)))))
        keep_tr = np.sort(rng.permutation(len(y_tr))[:subset])
        keep_te = np.sort(rng.permutation(len(y_te))[:n_te])
        x_tr, y_tr, x_te, y_te = x_tr[keep_tr], y_tr[keep_tr], x_te[keep_te], y_te[keep_te]
    name = kind if not arg else f"{kind}:{arg}"
    if classes is not None:
        name += f" ({len(names)} classes)"
    log.info("data %s: %d train, %d test, %d classes at %d×%d", name, len(y_tr), len(y_te),
             len(names), resolution, resolution)  # fmt: skip
    if x_tr.dtype == object:  # file names: streamed
        src = _Source("imagenet", resolution, IMAGENET_MEAN, IMAGENET_STD,
                      workers=default_workers() if workers is None else workers)  # fmt: skip
        tr = ImageSet(replace(src, paths=tuple(x_tr)))
        te = ImageSet(replace(src, paths=tuple(x_te)))
        return Dataset(name, tr, torch.from_numpy(y_tr), te, torch.from_numpy(y_te), names)
    if kind.startswith("cifar"):  # uint8 pixels in memory, normalised per batch
        pix = torch.from_numpy(np.ascontiguousarray(x_tr)).float().div_(255.0)
        mean = tuple(pix.mean(dim=(0, 2, 3)).tolist())
        std = tuple(pix.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist())
        del pix
        src = _Source("cifar", resolution, mean, std)
        tr = ImageSet(replace(src, pixels=torch.from_numpy(np.ascontiguousarray(x_tr))))
        te = ImageSet(replace(src, pixels=torch.from_numpy(np.ascontiguousarray(x_te))))
        return Dataset(name, tr, torch.from_numpy(y_tr), te, torch.from_numpy(y_te), names)
    groups = None
    if kind == "digits" and arg:
        x_tr, y_tr, groups = _augment_digits(x_tr, y_tr, arg, split_seed)
    xt_tr, xt_te = _prepare(x_tr, resolution), _prepare(x_te, resolution)
    mean = xt_tr.mean(dim=(0, 2, 3), keepdim=True)
    std = xt_tr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Dataset(
        name,
        (xt_tr - mean) / std,
        torch.from_numpy(y_tr),
        (xt_te - mean) / std,
        torch.from_numpy(y_te),
        names,
        None if groups is None else torch.from_numpy(groups),
    )


def _keep_classes(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, names: tuple[str, ...], k: int, seed: int
) -> _Raw:
    """A seeded sample of k of the classes (kept in name order), relabelled 0..k−1."""
    if not 2 <= k <= len(names):
        raise DataError(f"--classes must be between 2 and the {len(names)} classes of the data, got {k}")
    keep = np.sort(np.random.default_rng(seed + 3).permutation(len(names))[:k])
    new_label = np.full(len(names), -1, np.int64)
    new_label[keep] = np.arange(k)
    m_tr, m_te = np.isin(y_tr, keep), np.isin(y_te, keep)
    return (x_tr[m_tr], new_label[y_tr[m_tr]], x_te[m_te], new_label[y_te[m_te]],
            tuple(names[i] for i in keep))  # fmt: skip


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


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """`--data`, `--subset`, `--classes`, `--workers` (shared by `search.run` and `search.train`)."""
    p.add_argument("--data", default="digits",
                   help="digits (embedded) | cifar10:DIR | cifar100:DIR | imagefolder:DIR (see search.data)")
    p.add_argument("--subset", type=int, help="use this many train images (seeded sample)")
    p.add_argument("--classes", type=int,
                   help="keep a seeded sample of this many classes (ImageNet-100: imagefolder:DIR --classes 100)")
    p.add_argument("--workers", type=int,
                   help=f"processes decoding image files (default: the cores but one, at most 8; here {default_workers()})")
