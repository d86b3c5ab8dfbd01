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


# --- streaming: image folders, CIFAR pixels, augmentation -------------------------------------------
def _folder(root, classes=4, per_class=6, size=48, layout="flat"):
    from bench.data_loader import make_image_folder

    return make_image_folder(root, classes * per_class, classes, size=size, layout=layout)


def test_image_folder_streams_file_names_and_decodes_a_batch_at_a_time(tmp_path) -> None:
    from search.data import ImageSet, batches

    d = load_data(f"imagefolder:{_folder(tmp_path)}", resolution=16, workers=0)
    assert isinstance(d.x_train, ImageSet) and d.x_train.shape == (len(d.y_train), 3, 16, 16)
    assert all(isinstance(p, str) for p in d.x_train.source.paths)  # no pixels held
    (xw, yw), (xa, ya) = d.split_train(0.5, seed=0)
    assert isinstance(xw, ImageSet) and not set(xw.index) & set(xa.index)  # the θ split is held out
    assert sorted([*xw.index, *xa.index]) == list(range(len(d.y_train)))
    # evaluation batches: the same pixels every pass, normalised with ImageNet's statistics
    ev1 = torch.cat([x for x, _ in batches(d.x_test, d.y_test, 4)])
    ev2 = d.x_test.tensor()
    assert ev1.shape == (len(d.y_test), 3, 16, 16) and torch.equal(ev1, ev2)
    assert abs(float(ev1.mean())) < 3.0 and torch.isfinite(ev1).all()


def test_augmentation_is_seeded_by_the_pass_whatever_the_number_of_workers(tmp_path) -> None:
    from search.data import batches

    folder = _folder(tmp_path)
    one = load_data(f"imagefolder:{folder}", resolution=16, workers=0)
    two = load_data(f"imagefolder:{folder}", resolution=16, workers=2)

    def epoch(d, seed):
        g = torch.Generator().manual_seed(seed)
        return [(x, y) for x, y in batches(d.x_train, d.y_train, 5, generator=g)]

    a, b = epoch(one, 0), epoch(two, 0)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    again = epoch(one, 1)
    assert not torch.equal(a[0][0], again[0][0])  # another pass: other crops and order
    # a shuffled pass is augmented: not the evaluation transform of the same images
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(one.y_train), generator=g)[:5]
    assert not torch.allclose(a[0][0], one.x_train[order].tensor())


def test_imagenet_layout_and_a_seeded_class_subset_are_named_in_the_outputs(tmp_path) -> None:
    folder = _folder(tmp_path, classes=6, per_class=5, layout="imagenet")
    full = load_data(f"imagefolder:{folder}", resolution=16, workers=0)
    assert len(full.classes) == 6 and full.classes[0].startswith("n")
    assert len(full.y_test) == 6  # val/: one image per class
    sub = load_data(f"imagefolder:{folder}", resolution=16, workers=0, classes=3)
    again = load_data(f"imagefolder:{folder}", resolution=16, workers=0, classes=3)
    assert sub.classes == again.classes and len(sub.classes) == 3 and set(sub.classes) < set(full.classes)
    assert sub.name.endswith("(3 classes)")
    assert set(sub.y_train.tolist()) == {0, 1, 2} and len(sub.y_train) == 3 * 4
    for i in range(len(sub.y_train)):  # each kept image sits in the folder of its new label's class
        assert f"/{sub.classes[int(sub.y_train[i])]}/" in sub.x_train.source.paths[sub.x_train.index[i]]
    with pytest.raises(DataError, match="--classes"):
        load_data(f"imagefolder:{folder}", classes=7)


def _cifar100(root, n_train=12, n_test=4):
    rng = np.random.default_rng(1)
    for name, n in (("train", n_train), ("test", n_test)):
        with (root / name).open("wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "fine_labels": list(rng.integers(0, 100, n))}, f)  # fmt: skip
    with (root / "meta").open("wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)]}, f)
    return root


def test_cifar100_pickle_layout_and_its_pad_crop_flip(tmp_path) -> None:
    from search.data import batches

    d = load_data(f"cifar100:{_cifar100(tmp_path)}", resolution=32)
    assert d.num_classes == 100 and d.classes[7] == "f7" and d.x_train.shape == (12, 3, 32, 32)
    assert load_data(str(tmp_path), resolution=32).name.startswith("cifar100")  # recognised bare
    plain = d.x_train.tensor()
    black = ((0 - torch.tensor(d.x_train.source.mean)) / torch.tensor(d.x_train.source.std)).view(3, 1, 1)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    (aug, _), = list(batches(d.x_train, d.y_train, 12, generator=g))
    # every augmented image is its original shifted by at most 4 pixels (black fill), maybe mirrored
    for img, i in zip(aug, order.tolist()):
        padded = torch.cat([black.expand(3, 40, 40)]).clone()
        padded[:, 4:36, 4:36] = plain[i]
        found = any(torch.allclose(img, c, atol=1e-5)
                    for dy in range(9) for dx in range(9)
                    for c in (padded[:, dy:dy + 32, dx:dx + 32], padded[:, dy:dy + 32, dx:dx + 32].flip(-1)))  # fmt: skip
        assert found
    assert not torch.equal(aug, plain[order])


def test_cifar_errors_name_the_file_and_the_layout(tmp_path) -> None:
    (tmp_path / "train").write_bytes(b"not a pickle")
    (tmp_path / "meta").write_bytes(b"")
    with pytest.raises(DataError, match="train.*python pickle"):
        load_data(f"cifar100:{tmp_path}")
    with pytest.raises(DataError, match="data_batch_1"):
        load_data(f"cifar10:{tmp_path / 'nothing'}")


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_fails_with_its_path(tmp_path, workers: int) -> None:
    from search.data import batches

    folder = _folder(tmp_path, classes=2, per_class=4)
    bad = sorted(folder.rglob("*.jpg"))[0]
    bad.write_bytes(b"not a jpeg")
    d = load_data(f"imagefolder:{folder}", resolution=16, workers=workers)
    errors = []
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):  # the file is in one of the splits
        try:
            list(batches(x, y, 4))
        except DataError as e:
            errors.append(str(e))
    assert len(errors) == 1 and errors[0].startswith(f"cannot read image {bad}") and "Traceback" not in errors[0]
