"""Datasets: the embedded digits, CIFAR-10's python-pickle layout, image folders, splits."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from search.data import DataError, load_data


def test_digits_is_embedded_normalised_and_split() -> None:
    d = load_data("digits", resolution=32)
    assert d.x_train.shape == (1438, 3, 32, 32) and d.x_test.shape == (359, 3, 32, 32)
    assert d.num_classes == 10
    assert abs(float(d.x_train.mean())) < 1e-4
    (xw, yw), (xa, ya) = d.split_train(0.8, seed=0)
    assert len(yw) + len(ya) == len(d.y_train) and len(yw) == round(0.8 * len(d.y_train))
    assert len(load_data("digits", resolution=32, subset=100).y_train) == 100


def test_cifar10_pickle_layout(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with (tmp_path / name).open("wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         "labels": list(rng.integers(0, 10, 4))}, f)  # fmt: skip
    with (tmp_path / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    d = load_data(str(tmp_path), resolution=32)
    assert d.name.startswith("cifar10") and d.x_train.shape == (20, 3, 32, 32) and len(d.y_test) == 4
    assert d.classes[3] == "c3"


def test_image_folder(tmp_path) -> None:
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((40, 40, 3), 50 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load_data(f"imagefolder:{tmp_path}", resolution=32)
    assert d.classes == ("cat", "dog") and len(d.y_train) + len(d.y_test) == 10
    with pytest.raises(DataError, match="unknown dataset"):
        load_data(str(tmp_path / "nope"))


def test_augmented_digits_keep_each_copy_in_its_originals_search_split() -> None:
    plain = load_data("digits", resolution=16)
    aug = load_data("digits:augment=2", resolution=16)
    assert len(aug.y_train) == 3 * len(plain.y_train) and torch.equal(aug.y_test, plain.y_test)
    assert torch.equal(aug.y_train[: len(plain.y_train)], plain.y_train)
    (_, y_w), (_, y_val) = aug.split_train(0.8, seed=0)
    assert len(y_w) + len(y_val) == len(aug.y_train)
    # the images of one original are all on one side: the validation split never trains weights
    n = len(plain.y_train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    w_groups = set(perm[: int(round(n * 0.8))].tolist())
    x_w, _ = aug.split_train(0.8, seed=0)[0]
    in_w = torch.tensor([int(g) in w_groups for g in aug.groups])
    assert torch.equal(x_w, aug.x_train[in_w])
    shifted = aug.x_train[n:2 * n]
    assert not torch.equal(shifted, aug.x_train[:n])  # the copies are shifted, not duplicated
    with pytest.raises(DataError, match="augment=K"):
        load_data("digits:twice")
