"""Architectures as data: a space name plus one block name per searchable layer.

JSON form (the exchange format between search, profiler and lut):

    {"space": "fbnet", "blocks": ["k3_e1", "k3_e6", ...22 names], "head_channels": 1984,
     "name": "fbnet_c", "info": {...anything a producer wants to carry, e.g. predicted latency}}

`head_channels` is optional (null = the space's default head width).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ops import Op
from .spaces import Space, get_space, register_head_width

__all__ = [
    "Arch",
    "ArchError",
    "arch_ops",
    "NAMED_ARCHS",
    "register_arch",
    "get_arch",
    "load_arch",
    "named_archs_for",
]


class ArchError(ValueError):
    """An architecture does not fit its space; the message names the layer."""


@dataclass(frozen=True)
class Arch:
    space: str
    blocks: tuple[str, ...]
    head_channels: int | None = None  # None: the space's default head width
    name: str | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))

    @property
    def id(self) -> str:
        """Content id: space + a hash of blocks and head width ('arch-fbnet-3f2a…'); the name of
        an unnamed arch and the file stem of its exports. The one place an arch id is made."""
        blob = json.dumps({"space": self.space, "blocks": list(self.blocks), "head": self.head_channels})
        return f"arch-{self.space}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    @property
    def label(self) -> str:
        """What reports call the arch: its name, else its id."""
        return self.name or self.id

    def validate(self, space: Space | None = None) -> "Arch":
        """Check length and every block against its layer's candidates; returns self."""
        space = space or get_space(self.space)
        layers = space.layers()
        if len(self.blocks) != len(layers):
            raise ArchError(
                f"arch {self.name or ''} has {len(self.blocks)} blocks but space {space.name!r} "
                f"has {len(layers)} searchable layers"
            )
        for layer, block in zip(layers, self.blocks):
            allowed = space.candidates(layer)
            if block not in allowed:
                raise ArchError(
                    f"layer {layer.index} (stage {layer.stage}, {layer.c_in}→{layer.c_out} "
                    f"stride {layer.stride}): block {block!r} is not a candidate here; "
                    f"allowed: {', '.join(allowed)}"
                )
        if self.head_channels is not None and self.head_channels <= 0:
            raise ArchError(f"head_channels must be positive, got {self.head_channels}")
        return self

    # --- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "blocks": list(self.blocks),
            "head_channels": self.head_channels,
            "name": self.name,
            "info": self.info,
        }

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Arch":
        if not isinstance(d, dict) or "space" not in d or "blocks" not in d:
            raise ArchError("an arch JSON object needs the keys 'space' and 'blocks'")
        if not isinstance(d["blocks"], list) or not all(isinstance(b, str) for b in d["blocks"]):
            raise ArchError("'blocks' must be a list of block names")
        arch = cls(
            space=d["space"],
            blocks=tuple(d["blocks"]),
            head_channels=d.get("head_channels"),
            name=d.get("name"),
            info=dict(d.get("info") or {}),
        )
        return arch.validate()

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"arch file is not valid JSON: {e}") from None
        return cls.from_dict(d)


def arch_ops(arch: Arch, space: Space | None = None) -> list[Op]:
    """Every op the arch runs, in network order (fixed ops included): what a LUT sums."""
    space = space or get_space(arch.space)
    arch.validate(space)
    fixed = space.fixed_ops(arch.head_channels)
    body = [layer.op(block) for layer, block in zip(space.layers(), arch.blocks)]
    pre = [fixed["stem"]] + ([fixed["pre"]] if "pre" in fixed else [])
    return pre + body + [fixed["head"], fixed["classifier"]]


# --- named reference architectures ---------------------------------------------------------------
NAMED_ARCHS: dict[str, Arch] = {}


def register_arch(arch: Arch) -> Arch:
    if arch.name is None or arch.name in NAMED_ARCHS:
        raise ValueError(f"named arch needs a unique name, got {arch.name!r}")
    NAMED_ARCHS[arch.name] = arch
    if arch.head_channels:
        register_head_width(arch.space, arch.head_channels)
    return arch


def named_archs_for(space_name: str) -> list[Arch]:
    return [a for a in NAMED_ARCHS.values() if a.space == space_name]


def get_arch(name: str) -> Arch:
    try:
        return NAMED_ARCHS[name]
    except KeyError:
        raise ArchError(
            f"unknown arch {name!r}; named archs: {', '.join(NAMED_ARCHS)} (or give a JSON file)"
        ) from None


def load_arch(name_or_file: str | Path) -> Arch:
    """A registered name ('fbnet_c') or the path of an arch JSON file."""
    s = str(name_or_file)
    if s in NAMED_ARCHS:
        return NAMED_ARCHS[s]
    path = Path(s)
    if path.suffix == ".json" or path.exists():
        try:
            text = path.read_text()
        except OSError as e:
            raise ArchError(f"cannot read arch file {path}: {e.strerror}") from None
        return Arch.from_json(text)
    return get_arch(s)


# FBNet-A/B/C and FBNet-96-0.35-1 as published (Wu et al. 2019, Fig. 4 and Table 4; the same
# block lists as the reference implementation's model definitions). One row per stage.
_FBNET_A = [
    "skip",
    "k3_e3", "k3_e1", "skip", "skip",
    "k5_e6", "k3_e3", "k5_e1", "k3_e3",
    "k5_e6", "k5_e3", "k5_e1_g2", "k5_e6",
    "k3_e6", "k5_e1_g2", "k5_e3", "k3_e1_g2",
    "k5_e6", "k5_e6", "k5_e3", "k5_e6",
    "k5_e6",
]  # fmt: skip
_FBNET_B = [
    "k3_e1",
    "k3_e6", "k5_e1", "k3_e1", "k3_e1",
    "k5_e6", "k5_e3", "k3_e6", "k5_e6",
    "k5_e6", "k5_e1", "skip", "k5_e3",  # layer 10 is k5_e1 in the released FBNet-B model graph
    "k5_e6", "k3_e1", "k5_e1", "k5_e3",
    "k5_e6", "k5_e1", "k5_e6", "k5_e6",
    "k3_e6",
]  # fmt: skip
_FBNET_C = [
    "k3_e1",
    "k3_e6", "skip", "k3_e1", "k3_e1",
    "k5_e6", "k5_e3", "k5_e6", "k3_e6",
    "k5_e6", "k5_e3", "k5_e6", "k5_e6",
    "k5_e6", "k5_e6", "k5_e6", "k5_e3",
    "k5_e6", "k5_e6", "k5_e6", "k5_e6",
    "k3_e6",
]  # fmt: skip
_FBNET_96_035_1 = [
    "k3_e1",
    "k3_e6", "k3_e6", "skip", "skip",
    "k5_e6", "k5_e6", "skip", "skip",
    "k5_e6", "skip", "skip", "skip",
    "k3_e6", "skip", "skip", "skip",
    "k5_e6", "k5_e6", "skip", "skip",
    "k5_e6",
]  # fmt: skip

register_arch(Arch("fbnet", _FBNET_A, head_channels=1504, name="fbnet_a"))
register_arch(Arch("fbnet", _FBNET_B, head_channels=1984, name="fbnet_b"))
register_arch(Arch("fbnet", _FBNET_C, head_channels=1984, name="fbnet_c"))
register_arch(Arch("fbnet-r96-w0.35", _FBNET_96_035_1, head_channels=1416, name="fbnet_96_035_1"))
