"""The training recipe for the mobile blocks we ship: initialisation, parameter groups, schedule.

    init_weights(model, zero_init_last=True)      # timm's init for these blocks, in place
    groups = param_groups(model, weight_decay)    # decay on conv / linear weights only
    opt = make_optimizer(model, cfg)              # SGD (Nesterov) over those groups
    sched = make_schedule(opt, cfg, total_steps)  # linear warm-up, then cosine to cfg.min_lr
    lr = lr_at(step, peak, total, warmup, min_lr) # the schedule's value, a pure function

`RecipeConfig` holds the values; `search.training.TrainConfig` extends it, and the short trainings
of the search strategies use the same functions. Where each value comes from (timm file names,
paper sections) is listed beside it and in docs/training.md.

Why it is needed (measured on FBNet-C at the proxy resolution 32, width 1.0): the head's 1,984
post-ReLU features reach the classifier unnormalised (|h|² ≈ 990 per image at 1×1 spatial size,
4× width 0.25's), so a plain SGD step at lr 0.1 with momentum 0.9 from step 0 moves the logits by
lr·|h|² per unit of error: their std went from 0.4 to 44 in 30 steps, the loss rose above
chance, and the body's batch-norm statistics never settled (test loss 10⁴–10⁵ in eval mode). A
batch-size-scaled peak lr reached through a warm-up keeps every width inside the stable region;
zero-initialised residual branches start each block as the identity (Goyal et al. 2017, §5.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["RecipeConfig", "init_weights", "param_groups", "make_optimizer", "make_schedule", "lr_at"]


@dataclass(frozen=True)
class RecipeConfig:
    """Optimizer, schedule and initialisation; every default has its source in docs/training.md."""

    batch_size: int = 64  # global: split over the ranks under torchrun
    # peak lr = lr if given, else lr_base · batch_size / lr_base_batch (the linear scaling rule,
    # Goyal et al. 2017 §2.1; timm train.py --lr-base 0.1 --lr-base-size 256): 0.025 at batch 64
    lr: float | None = None
    lr_base: float = 0.1
    lr_base_batch: int = 256
    min_lr: float = 0.0  # where the cosine ends (timm train.py --min-lr 0)
    warmup_epochs: float = 2.0  # linear warm-up from lr/steps to the peak (Goyal et al. 2017 §2.2)
    momentum: float = 0.9
    nesterov: bool = True  # timm's `sgd` is Nesterov SGD (timm/optim/_optim_factory.py)
    weight_decay: float = 4e-5  # conv and linear weights only (MobileNetV2 §6.1: 4e-5)
    label_smoothing: float = 0.1  # timm train.py --smoothing 0.1 (Szegedy et al. 2016 §7)
    clip_grad_norm: float | None = None  # max global L2 norm of the gradient; None: no clipping
    # "torchvision": fan-out Kaiming-normal convs (timm _init_weight_goog, torchvision
    # mobilenetv2.py), classifier normal(0, 0.01) (torchvision); "timm": the classifier
    # uniform(±1/√classes) as timm's; "torch": PyTorch's defaults (`init_weights`)
    init: str = "torchvision"
    zero_init_last: bool = True  # residual blocks' last BN γ = 0 (timm resnet.py zero_init_last)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not (self.lr_base > 0 and self.lr_base_batch >= 1):
            raise ValueError("lr_base must be > 0 and lr_base_batch ≥ 1")
        if self.warmup_epochs < 0 or self.min_lr < 0 or self.weight_decay < 0:
            raise ValueError("warmup_epochs, min_lr and weight_decay must be ≥ 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {self.clip_grad_norm}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")

    @property
    def peak_lr(self) -> float:
        """The learning rate after warm-up: `lr`, else scaled with the batch size."""
        return self.lr if self.lr is not None else self.lr_base * self.batch_size / self.lr_base_batch


INITS = ("timm", "torchvision", "torch")


def init_weights(model: nn.Module, *, init: str = "torchvision", zero_init_last: bool = True) -> nn.Module:
    """Initialise `model` in place and return it.

    Convs (both "torchvision" and "timm": timm `_efficientnet_builder._init_weight_goog`, the TF
    MnasNet/EfficientNet init; torchvision `mobilenetv2.py`'s kaiming_normal_(mode="fan_out")):
    normal(0, √(2 / fan_out)) with fan_out = k·k·c_out / groups; BN γ = 1, β = 0; biases 0.
    Linear weights: "torchvision" normal(0, 0.01); "timm" uniform(±1/√out_features). timm's
    bound does not shrink with the head's width: at width 1.0 (1,984 features) the initial logits
    have a std of ≈ 6 and the first epoch's loss is 5–6 (2.1 with normal(0, 0.01)); both reach
    the same accuracy by epoch 10. "torch": the modules as built (PyTorch's defaults).

    With `zero_init_last`, every block that has a `zero_init_last()` method (the residual mobile
    blocks of `search.space.modules`) zeroes its last BN's γ, so each residual block starts as
    the identity."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if init != "torch":
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                if init == "timm":
                    bound = 1.0 / math.sqrt(m.out_features)
                    nn.init.uniform_(m.weight, -bound, bound)
                else:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
    if zero_init_last:
        for m in model.modules():
            if callable(getattr(m, "zero_init_last", None)):
                m.zero_init_last()
    return model


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: conv and linear weights decay, BN parameters and biases do not
    (timm/optim/_param_groups.py `param_groups_weight_decay`: every parameter of ndim ≤ 1 or
    named `*.bias` goes without decay). Empty groups are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, cfg: RecipeConfig) -> torch.optim.SGD:
    """SGD with (Nesterov) momentum at the peak learning rate over `param_groups`."""
    return torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.peak_lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0)  # fmt: skip


def lr_at(step: int, peak: float, total: int, warmup: int, min_lr: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (0-based) of `total`: peak·(step+1)/warmup over
    the first `warmup` steps, then a half cosine from the peak down to `min_lr` at step `total`."""
    if total < 1 or not 0 <= warmup <= total:
        raise ValueError(f"need total ≥ 1 and 0 ≤ warmup ≤ total, got total={total}, warmup={warmup}")
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_steps = max(1, total - warmup)
    t = min(step - warmup, decay_steps) / decay_steps
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_steps(cfg: RecipeConfig, steps_per_epoch: int, total: int) -> int:
    """Steps of linear warm-up: `cfg.warmup_epochs` epochs, at most half the run."""
    return min(int(round(cfg.warmup_epochs * steps_per_epoch)), total // 2)


def make_schedule(
    opt: torch.optim.Optimizer, cfg: RecipeConfig, total: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule of `lr_at` (stepped after every optimizer step; its state_dict resumes)."""
    total = max(1, total)
    warmup = warmup_steps(cfg, steps_per_epoch, total)
    peak = cfg.peak_lr
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_at(step, peak, total, warmup, cfg.min_lr) / peak
    )
