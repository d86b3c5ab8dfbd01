"""Data-parallel pieces without a process group: sharded batching, loss weights, digests.

Two processes under torchrun (gloo): a search here, whose ranks must end with the same θ and
arch; training in tests/test_search_train.py."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from search.data import batches
from search.distributed import (
    MIN_PER_RANK,
    Dist,
    all_reduce_sum,
    average_gradients,
    broadcast_object,
    digest,
    loss_weight,
    num_batches,
    ranks_agree,
    setup,
    shard,
    shard_batches,
    unwrap,
    wrap,
)


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n)


def test_one_process_batches_exactly_like_search_data() -> None:
    x, y = _data(103)
    ours = list(shard_batches(x, y, 16, generator=torch.Generator().manual_seed(5)))
    ref = list(batches(x, y, 16, generator=torch.Generator().manual_seed(5)))
    assert len(ours) == len(ref) == num_batches(103, 16)
    for (xa, ya, n), (xb, yb) in zip(ours, ref):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and n == len(yb)
        assert loss_weight(len(ya), n) == 1.0


@pytest.mark.parametrize(("n", "batch", "world"), [(64, 15, 2), (65, 16, 2), (100, 32, 3), (7, 4, 2)])
def test_ranks_split_each_global_batch_and_take_the_same_number_of_steps(n, batch, world) -> None:
    x, y = _data(n)
    per_rank = [
        list(shard_batches(x, y, batch, Dist(rank=r, world_size=world), generator=torch.Generator().manual_seed(1)))
        for r in range(world)
    ]
    steps = {len(b) for b in per_rank}
    assert steps == {num_batches(n, batch, Dist(world_size=world))}  # every rank steps alike
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    seen = []
    for step in range(steps.pop()):
        parts = [per_rank[r][step] for r in range(world)]
        glob = {p[2] for p in parts}
        assert len(glob) == 1
        n_glob = glob.pop()
        union = torch.cat([p[1] for p in parts])
        assert sorted(union.tolist()) == sorted(order[step * batch : step * batch + n_glob].tolist())
        assert all(len(p[1]) >= MIN_PER_RANK for p in parts)
        # the weights make DDP's mean of per-rank mean losses the mean over the global batch
        assert sum(loss_weight(len(p[1]), n_glob, Dist(world_size=world)) for p in parts) == pytest.approx(world)
        seen += union.tolist()
    assert len(seen) == len(set(seen))
    dropped = n - len(seen)
    assert dropped < MIN_PER_RANK * world  # only a tail too small to split is left out


def test_a_batch_too_small_for_the_ranks_is_refused() -> None:
    x, y = _data(10)
    with pytest.raises(ValueError, match="too small for 4 processes"):
        next(shard_batches(x, y, 7, Dist(rank=0, world_size=4)))


def test_eval_shards_cover_the_data_once() -> None:
    x, _ = _data(11)
    parts = [shard(x, Dist(rank=r, world_size=3)) for r in range(3)]
    assert sorted(torch.cat(parts).flatten().tolist()) == list(range(11))


def test_one_process_needs_no_process_group() -> None:
    dist = setup("cpu")  # no torchrun variables in the test environment
    assert dist == Dist() and dist.is_main and not dist.is_distributed
    m = nn.Linear(2, 2)
    assert wrap(m, dist) is m and unwrap(m) is m
    assert all_reduce_sum([1.5, 2], dist) == [1.5, 2.0]
    assert broadcast_object({"a": 1}, dist) == {"a": 1}
    assert ranks_agree(m, dist)
    with pytest.raises(ValueError, match="cpu or cuda"):
        setup("tpu")


def test_digest_sees_every_bit_of_the_state() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    d = digest(m)
    assert d == digest(m) and len(d) == 16
    with torch.no_grad():
        m[0].weight[0, 0] = torch.nextafter(m[0].weight[0, 0], torch.tensor(1.0))  # one ulp
    assert digest(m) != d
    before = digest(m)
    m[1].num_batches_tracked += 1  # a 0-dim integer buffer counts too
    assert digest(m) != before


def _average_in_rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as tdist

    import search.distributed as sd

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        sd.BUCKET_BYTES = 100  # buckets of several tensors, split by size and by dtype
        shapes = [(3, 4), (5,), (2, 2, 2), (1,), (7,), (6,), (10,)]
        params = [torch.zeros(sh, dtype=torch.float64 if i == 3 else torch.float32, requires_grad=True)
                  for i, sh in enumerate(shapes)]  # fmt: skip
        for i, p in enumerate(params):
            if i != 1:  # no gradient on either rank: skipped alike
                p.grad = torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape) * (rank + 1) + i
        average_gradients(params, Dist(rank=rank, world_size=2, backend="gloo"))
        torch.save([p.grad for p in params], f"{out}/rank{rank}.pt")
    finally:
        tdist.destroy_process_group()


def test_gradients_average_over_ranks_in_buckets(tmp_path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_average_in_rank, args=(port, str(tmp_path)), nprocs=2)
    g0, g1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for i, (a, b) in enumerate(zip(g0, g1)):
        if i == 1:
            assert a is None and b is None
            continue
        base = torch.arange(a.numel(), dtype=a.dtype).reshape(a.shape)
        expected = (base * 1 + i + base * 2 + i) / 2  # the mean of rank 0's and rank 1's
        assert torch.equal(a, expected) and torch.equal(b, expected) and a.dtype == b.dtype


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fbnet"])  # evolution shares the sharding and gradient hook
def test_two_process_search_keeps_theta_identical_and_rank0_writes(strategy, synthetic_lut, tmp_path) -> None:
    lut = synthetic_lut(tmp_path / "luts", "ddpdev")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "search.run", "--lut", str(lut.path), "--strategy", strategy, "--subset", "160",
           "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "16", "--cycles", "8", "--population", "4",
           "--tournament", "2", "--recalib-batches", "2", "--torch-threads", "1", "--out", str(out), "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    json_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(json_lines) == 1  # rank 1 prints nothing
    report = json.loads(json_lines[0])
    assert report["world_size"] == 2
    info = json.loads((out / "arch.json").read_text())["info"]
    # run_search all-gathers digests of the found arch and θ and stops if they differ
    assert info["world_size"] == 2 and info["ranks_agree"] is True
    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows if r["phase"] != "evolution"] == ["0", "1", "2"]  # rank 0's log only
    if strategy == "fbnet":  # θ moved (identically on both ranks)
        assert float(rows[-1]["theta_entropy"]) < float(rows[0]["theta_entropy"])
