"""A search's whole configuration: presets, the `config.yaml` of a run, and how they combine.

    conf = resolve(defaults, explicit, file=load_yaml(path), preset=None)   # a flat dict
    write_yaml(out / "config.yaml", conf)                                 # atomically

A configuration is one flat mapping: the keys are the `SearchConfig` fields (`alpha`, `theta_lr`,
`theta_betas`, ...) and the run's own settings (`lut`, `data`, `resolution`, `train_epochs`,
`final_samples`, ...), named as `python -m search.run`'s flags are without the dashes (the flag
`--lambda` is the key `lambda_lat`). A few keys have no flag (e.g. `w_nesterov`, `theta_betas`):
a preset or a file sets them.

Layers, each over the one before: the defaults → the preset (`default`: the values tuned for a
search of a few minutes on a laptop CPU; `fbnet-paper`, `proxyless-paper`, `darts-paper`: the
papers' values, with their sources in docs/presets.md) → the file (`--config FILE`) → the flags
given on the command line. A preset named on the command line goes over the file; the file's own
`preset` key goes under it. An unknown key, a value of the wrong type or an unknown choice is a
`ConfigError` naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from lut.files import atomic_write
from search.strategies import SearchConfig

__all__ = ["ConfigError", "PRESETS", "CONFIG_FILE", "SEARCH_KEYS", "resolve", "from_cli", "config_actions",
           "load_yaml", "write_yaml", "coerce", "key_types", "search_config"]  # fmt: skip

CONFIG_FILE = "config.yaml"
SEARCH_KEYS = tuple(f.name for f in dataclasses.fields(SearchConfig))


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names the key."""


# Each paper's hyperparameters as published; docs/presets.md lists every value with its source.
# Keys not named here keep the layer below (the defaults): a preset fixes everything its paper
# states that this implementation has a knob for.
PRESETS: dict[str, dict[str, Any]] = {
    # the values tuned for a search of a few minutes on a laptop CPU (SearchConfig's defaults and
    # the strategies' own, see `search.strategies.base`)
    "default": {},
    "fbnet-paper": {
        "strategy": "fbnet",
        "warmup_epochs": 10,
        "epochs": 80,
        "batch_size": 192,
        "w_fraction": 0.8,
        "alternate": "epoch",
        "w_lr": 0.1,
        "w_momentum": 0.9,
        "w_weight_decay": 1e-4,
        "w_nesterov": False,
        "w_lr_min": 0.0,
        "w_grad_clip": None,
        "w_warmup_epochs": 0,
        "gumbel": "soft",
        "theta_lr": 0.01,
        "theta_weight_decay": 5e-4,
        "theta_betas": (0.9, 0.999),
        "theta_grad_clip": None,
        "entropy_weight": 0.0,
        "tau_schedule": "paper",
        "tau0": 5.0,
        "tau_decay": 0.045,
        "mask_threshold": 0.0,
        "latency_loss": "mul",
        "alpha": 0.2,
        "beta": 0.6,
        "num_samples": 6,
        "final_samples": 6,
    },
    "proxyless-paper": {
        "strategy": "proxyless",
        "warmup_epochs": 40,
        "epochs": 120,
        "batch_size": 256,
        "w_fraction": 0.96,  # 50,000 of ImageNet's 1.28 M training images are the validation split
        "alternate": "batch",
        "w_lr": 0.025,
        "w_momentum": 0.9,
        "w_weight_decay": 4e-5,
        "w_nesterov": True,
        "w_lr_min": 0.0,
        "w_grad_clip": None,
        "w_warmup_epochs": 0,
        "theta_lr": 1e-3,
        "theta_weight_decay": 0.0,
        "theta_betas": (0.0, 0.999),
        "theta_grad_clip": None,
        "entropy_weight": 0.0,
        "proxyless_paths": 2,
        "proxyless_arch_every": 5,
        "latency_loss": "mul",
        "alpha": 0.2,
        "beta": 0.3,
    },
    "darts-paper": {
        "strategy": "darts",
        "warmup_epochs": 0,
        "epochs": 50,
        "batch_size": 64,
        "w_fraction": 0.5,
        "alternate": "batch",
        "w_lr": 0.025,
        "w_momentum": 0.9,
        "w_weight_decay": 3e-4,
        "w_nesterov": False,
        "w_lr_min": 0.001,
        "w_grad_clip": 5.0,
        "w_warmup_epochs": 0,
        "theta_lr": 3e-4,
        "theta_weight_decay": 1e-3,
        "theta_betas": (0.5, 0.999),
        "theta_grad_clip": None,
        "entropy_weight": 0.0,
        "darts_order": 2,
        "darts_xi": None,
        "darts_tau_end": 1.0,
        "mask_threshold": 0.0,
        "latency_loss": "none",
    },
}


def _optional(typ: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else typ(v)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no"):
        return v.lower() in ("true", "yes")
    raise ValueError(f"expected true or false, got {v!r}")


def _pair(v: Any) -> tuple[float, float]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"expected a list of two numbers, got {v!r}")
    return (float(v[0]), float(v[1]))


def _number(typ: type) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError(f"expected a number, got {v!r}")
        if typ is int:
            if isinstance(v, float) and not v.is_integer():
                raise ValueError(f"expected an integer, got {v!r}")
            return int(v)
        return float(v)  # also "1e-4", which YAML 1.1 reads as a string

    return conv


# the type of the SearchConfig fields that have no command-line flag
_FIELD_TYPES: dict[str, Callable[[Any], Any]] = {
    "w_momentum": _number(float),
    "w_weight_decay": _number(float),
    "theta_weight_decay": _number(float),
    "w_nesterov": _bool,
    "w_lr_min": _number(float),
    "w_grad_clip": _optional(_number(float)),
    "w_warmup_epochs": _number(float),
    "theta_betas": _pair,
    "theta_grad_clip": _optional(_number(float)),
}


def coerce(key: str, value: Any, types: Mapping[str, Callable[[Any], Any]],
           choices: Mapping[str, tuple[Any, ...]]) -> Any:  # fmt: skip
    """`value` as the type of `key`; ConfigError naming the key otherwise."""
    if key not in types:
        raise ConfigError(f"unknown configuration key {key!r}; known: {', '.join(sorted(types))}")
    try:
        out = types[key](value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"configuration key {key!r}: {e}") from None
    if out is not None and key in choices and out not in choices[key]:
        raise ConfigError(f"configuration key {key!r}: {out!r} is not one of {', '.join(map(str, choices[key]))}")
    return out


def key_types(flag_types: Mapping[str, Callable[[Any], Any] | None]) -> dict[str, Callable[[Any], Any]]:
    """Every configuration key → its converter: the flags' types (None: a string) made optional,
    and the flag-less SearchConfig fields'."""
    types: dict[str, Callable[[Any], Any]] = {}
    for k, t in flag_types.items():
        types[k] = _optional(_number(t) if t in (int, float) else (t or str))
    types.update(_FIELD_TYPES)
    return types


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file; ConfigError when it is missing, unreadable or not a mapping."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the configuration {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of key: value, not a {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def resolve(
    defaults: Mapping[str, Any],
    explicit: Mapping[str, Any],
    *,
    types: Mapping[str, Callable[[Any], Any]],
    choices: Mapping[str, tuple[Any, ...]],
    file: Mapping[str, Any] | None = None,
    file_name: str = "the configuration file",
) -> dict[str, Any]:
    """defaults → preset → file → explicit flags (a preset given explicitly goes over the file)."""
    file = dict(file or {})
    for k, v in file.items():
        file[k] = coerce(k, v, types, choices) if k != "preset" else v
    preset_cli = explicit.get("preset")
    preset = preset_cli or file.get("preset") or defaults.get("preset") or "default"
    if preset not in PRESETS:
        where = "--preset" if preset_cli else f"{file_name}'s preset"
        raise ConfigError(f"{where}: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    layers = [PRESETS[preset], file] if not preset_cli else [file, PRESETS[preset]]
    conf = dict(defaults)
    for layer in [*layers, explicit]:
        conf.update(layer)
    conf["preset"] = preset
    return conf


# flags that shape how a run is shown or where it goes, not what it computes: no configuration keys
NOT_CONFIG = ("help", "out", "json", "progress", "verbose", "config", "resume")
# lower bounds of the counts
_AT_LEAST = {"epochs": 0, "warmup_epochs": 0, "train_epochs": 0, "final_samples": 0, "batch_size": 1,
             "final_epochs": 1}  # fmt: skip


def config_actions(p: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's flags that are configuration keys."""
    return [a for a in p._actions if a.dest not in NOT_CONFIG]


def from_cli(
    p: argparse.ArgumentParser, argv: list[str] | None, *, config: str | None = None, resume_out: str | None = None
) -> dict[str, Any]:
    """A run's whole configuration from its command line (`p` parsed `argv`): defaults → preset →
    `config` (or, resuming, `resume_out`'s config.yaml) → the flags typed. ConfigError on bad input."""
    actions = config_actions(p)
    typed = argparse.ArgumentParser(add_help=False)  # the same flags without defaults: what was typed
    for a in actions:
        kw: dict[str, Any] = {"dest": a.dest, "default": argparse.SUPPRESS}
        if a.nargs == 0:
            kw.update(action="store_const", const=a.const)
        else:
            kw["type"] = a.type
        typed.add_argument(*a.option_strings, **kw)
    explicit = vars(typed.parse_known_args(sys.argv[1:] if argv is None else argv)[0])
    defaults: dict[str, Any] = {}
    for a in actions:  # a flag's own default, not that of an older name kept as a hidden alias
        defaults.setdefault(a.dest, a.default)
    defaults.update({k: getattr(SearchConfig(), k) for k in SEARCH_KEYS if k not in defaults})
    type_of: dict[str, Any] = {}
    choices: dict[str, tuple] = {}
    for a in actions:
        type_of.setdefault(a.dest, _bool if a.nargs == 0 and isinstance(a.const, bool) else a.type)
        if a.choices:
            choices.setdefault(a.dest, tuple(a.choices))
    types = key_types(type_of)
    file, name = None, "the configuration file"
    if resume_out is not None and config:
        raise ConfigError("--resume continues the run in --out with its own config.yaml; drop --config")
    if resume_out is not None:
        name = str(Path(resume_out) / CONFIG_FILE)
        if not Path(name).is_file():
            raise ConfigError(f"nothing to resume in {resume_out}: it holds no {CONFIG_FILE}; run without --resume")
        file = load_yaml(name)
    elif config:
        name, file = config, load_yaml(config)
    conf = resolve(defaults, explicit, types=types, choices=choices, file=file, file_name=name)
    for k, low in _AT_LEAST.items():
        if conf.get(k) is not None and conf[k] < low:
            raise ConfigError(f"{k} must be ≥ {low}, got {conf[k]}")
    return conf


def search_config(conf: Mapping[str, Any]) -> SearchConfig:
    """The SearchConfig of a configuration."""
    return SearchConfig(**{k: conf[k] for k in SEARCH_KEYS if k in conf})


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def write_yaml(path: str | Path, conf: Mapping[str, Any], header: str = "") -> Path:
    """`conf` as YAML (keys in the given order), replacing `path` atomically."""
    buf = io.StringIO()
    for line in header.splitlines():
        buf.write(f"# {line}\n" if line else "#\n")
    yaml.safe_dump({k: _plain(v) for k, v in conf.items()}, buf, sort_keys=False, default_flow_style=None)
    return atomic_write(path, buf.getvalue())
