"""Supernet: the space's fixed ops around one mixed op per searchable layer.

A mixed op holds every candidate block of its layer and returns Σ_{i ∈ active} m_i · block_i(x).
Which blocks run is explicit, so every strategy pays only for the paths it needs:

    FBNet      m = GumbelSoftmax(θ, τ); active = {i : m_i > threshold}. Once τ has annealed and a
               mask is near one-hot, one or two blocks run instead of nine. Dropped blocks lose
               their term m_i·block_i(x) (at most `threshold` of the output) and their own
               dL/dm_i; the gradient wrt θ through the kept m_j stays exact.
    DARTS      m = softmax(α); every block runs while α is near uniform (the method's memory
               cost), those under the threshold are dropped as α sharpens.
    Proxyless  weight step: one sampled path, m = None (no multiply at all);
               architecture step: one, two or all paths, m = straight-through binary gates.
    one-shot   (evolution / random) one uniformly sampled path per step, as in Proxyless.

Columns of `m` are the space's canonical candidate order; blocks that are not candidates at a
layer have no module and must have m = 0 (strategies add `logit_mask` = −inf to their logits).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from search.space import LayerShape, Space, build_block

__all__ = ["MixedOp", "Supernet", "recalibrated_bn"]


class MixedOp(nn.Module):
    """All candidate blocks of one layer; runs only the active ones."""

    def __init__(self, layer: LayerShape, space: Space) -> None:
        super().__init__()
        allowed = space.candidates(layer)
        self.columns = tuple(space.candidates_all.index(b) for b in allowed)
        self._slot = {col: i for i, col in enumerate(self.columns)}
        self.paths = nn.ModuleList(
            build_block(b, layer.c_in, layer.c_out, layer.stride) for b in allowed
        )

    def forward(
        self, x: torch.Tensor, weights: torch.Tensor | None, active: Sequence[int]
    ) -> torch.Tensor:
        if weights is None:  # single path, no mask multiply
            (col,) = active
            return self.paths[self._slot[col]](x)
        out: torch.Tensor | None = None
        for col in active:
            y = weights[col] * self.paths[self._slot[col]](x)
            out = y if out is None else out + y
        if out is None:
            raise ValueError("a mixed op needs at least one active path; lower the threshold")
        return out


class Supernet(nn.Module):
    """stem (→ pre) → mixed ops → head → classifier, on the (proxy) space's shapes."""

    def __init__(self, space: Space, num_classes: int) -> None:
        super().__init__()
        space = replace(space, num_classes=num_classes)
        self.space = space
        fixed = space.fixed_ops()
        front = [fixed["stem"]] + ([fixed["pre"]] if "pre" in fixed else [])
        self.front = nn.Sequential(*(build_block(o.block, o.c_in, o.c_out, o.stride) for o in front))
        self.mixed = nn.ModuleList(MixedOp(layer, space) for layer in space.layers())
        back = [fixed["head"], fixed["classifier"]]
        self.back = nn.Sequential(*(build_block(o.block, o.c_in, o.c_out, o.stride) for o in back))
        allowed = torch.zeros(len(self.mixed), len(space.candidates_all), dtype=torch.bool)
        for i, m in enumerate(self.mixed):
            allowed[i, list(m.columns)] = True
        self.register_buffer("allowed", allowed, persistent=False)
        self.active_paths: list[int] = []  # paths run per layer in the last forward

    @property
    def logit_mask(self) -> torch.Tensor:
        """0 where a block is a candidate, −inf elsewhere: add it to architecture logits."""
        zero = torch.zeros(self.allowed.shape, device=self.allowed.device)
        return zero.masked_fill(~self.allowed, float("-inf"))

    def forward(
        self,
        x: torch.Tensor,
        weights: torch.Tensor | None = None,
        active: Sequence[Sequence[int]] | None = None,
        threshold: float = 0.0,
    ) -> torch.Tensor:
        """weights: [layers, blocks] mask (None: single path per layer given by `active`);
        active: column indices run per layer (default: weights > threshold)."""
        if active is None:
            if weights is None:
                raise ValueError("give mask weights, active paths, or both")
            w = weights.detach()
            # the heaviest path always runs, so a mask spread below the threshold still works
            keep = ((w > threshold) | (w == w.max(dim=1, keepdim=True).values)) & self.allowed
            active = [row.nonzero().flatten().tolist() for row in keep.cpu()]
        self.active_paths = [len(a) for a in active]
        x = self.front(x)
        for layer, (op, cols) in enumerate(zip(self.mixed, active)):
            x = op(x, None if weights is None else weights[layer], cols)
        return self.back(x)

    def forward_path(self, x: torch.Tensor, idx: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """One block per layer (column indices): a single sampled network."""
        return self(x, None, [[int(i)] for i in idx])


@contextmanager
def recalibrated_bn(
    net: Supernet, idx: Sequence[int] | torch.Tensor, calibration: Iterable[torch.Tensor]
) -> Iterator[None]:
    """Evaluate one path with batch-norm statistics of its own, then put the supernet back.

    A supernet's running BN statistics mix every path it trained, so one path evaluated with them
    normalises by the wrong mean and variance (its accuracy can fall to chance). As single-path
    one-shot methods do (Guo et al., SPOS, ECCV 2020, §3.3), the running statistics are reset and
    re-estimated on training batches (`calibration`, train mode, cumulative average, no gradients),
    and the body of the `with` runs in eval mode. On exit every BN buffer, momentum and the
    train/eval mode are restored, so searching can go on. Batches of one image are skipped.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in bns]  # fmt: skip
    was_training = net.training
    try:
        with torch.no_grad():
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative moving average over the calibration batches
            net.train()
            used = 0
            for xb in calibration:
                if len(xb) > 1:
                    net.forward_path(xb, idx)
                    used += 1
            if used == 0:
                raise ValueError("BN recalibration needs at least one batch of two or more images")
        net.eval()
        with torch.no_grad():
            yield
    finally:
        for m, (mean, var, count, momentum) in zip(bns, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = momentum
        net.train(was_training)
