"""The round loop, shared by op jobs (`profiler.protocol.job`) and whole-arch measurements
(`profiler.api.measure_archs_detailed`, `profiler.deploy`): round r visits every pending key once,
in the order `Random(seed + r)` shuffles the sorted keys to, after `target.round_state()`; faults
and op-rounds taken in bad conditions are measured again after the last round, up to a limit.
What it measures goes out through callbacks: this module keeps nothing on disk.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from profiler.protocol.config import ProtocolConfig
from profiler.runtimes import Runtime
from profiler.targets.base import RunnerError, RunSpec, Target, check_stop, load_extras

__all__ = ["run_rounds"]

log = logging.getLogger(__name__)


def run_rounds(
    target: Target,
    runtime: Runtime,
    files: dict[str, Path],
    config: ProtocolConfig,
    spec: RunSpec,
    *,
    done: set[tuple[str, int]] = frozenset(),  # type: ignore[assignment]
    round_states: dict[int, dict[str, Any]] | None = None,
    on_state: Callable[[int, dict[str, Any]], None] | None = None,
    on_samples: Callable[[str, int, list[float], dict[str, float]], None] | None = None,
    on_failure: Callable[[str, int, str], None] | None = None,
    failures: dict[str, int] | None = None,
    on_remeasure: Callable[[str, int, str], None] | None = None,
    remeasures: dict[str, int] | None = None,
    specs: dict[str, RunSpec] | None = None,
    progress: bool = True,
    desc: str = "measure",
) -> set[str]:
    """Measure every (key, round) not in `done`; report through the callbacks.

    A fault (the runner crashed, timed out, printed nothing usable) costs that op-round only: the
    op goes on in the next rounds, and its missing op-round is measured again after the last
    round. An op is given up after `config.retries + 1` faults (`failures` holds each key's fault
    count so far, e.g. from an interrupted job, and is updated). `specs` overrides `spec` for some
    keys (e.g. ops timed cold among networks timed warm). Returns the keys given up."""
    keys = sorted(files)
    failures = failures if failures is not None else {}
    remeasures = remeasures if remeasures is not None else {}
    # a phone checks the conditions of each op-round (`op_conditions`: too hot, below its locked
    # clock) and allows `max_remeasure` re-measurements of an op before it fails
    conditions = getattr(target, "op_conditions", None)
    limit = int(getattr(target, "max_remeasure", 0))
    round_states = round_states if round_states is not None else {}
    done = set(done)
    bar = tqdm(total=len(keys) * config.rounds, initial=len(done), desc=desc, unit="op", disable=not progress)

    def given_up(key: str) -> bool:
        return failures.get(key, 0) > config.retries or (conditions is not None and remeasures.get(key, 0) > limit)

    def attempt(key: str, r: int) -> None:
        check_stop()  # Ctrl-C: stop between op-rounds (what is on disk stays)
        key_spec = (specs or {}).get(key, spec)
        try:
            m = target.measure_detailed(runtime, files[key], key_spec)
            samples = [v / key_spec.copies for v in m.samples_us]  # one sample per copy of the op
            if len(samples) != key_spec.runs or min(samples) <= 0:
                raise RunnerError(
                    f"target returned {len(samples)} samples (expected {key_spec.runs}) or non-positive ones"
                )
        except RunnerError as e:
            failures[key] = failures.get(key, 0) + 1
            later = "giving up on it" if given_up(key) else "measuring that op-round again later"
            log.warning("op %s failed in round %d (fault %d): %s; %s", key, r + 1, failures[key], e, later)
            if on_failure is not None:
                on_failure(key, r, str(e))
            if given_up(key):
                bar.update(sum((key, q) not in done for q in range(config.rounds)))
            return
        reason = conditions() if conditions is not None else None
        if reason:  # taken too hot or throttled: its samples are dropped and it is measured again later
            remeasures[key] = remeasures.get(key, 0) + 1
            later = "giving up on it" if given_up(key) else "measuring that op-round again after a cool-down"
            log.warning("op %s, round %d: %s (%d of %d re-measurements); %s", key, r + 1, reason,
                        remeasures[key], limit, later)  # fmt: skip
            if on_remeasure is not None:
                on_remeasure(key, r, reason)
            if given_up(key):
                bar.update(sum((key, q) not in done for q in range(config.rounds)))
            return
        done.add((key, r))
        if on_samples is not None:
            on_samples(key, r, samples, load_extras(m.extra, runtime.runner if target.name != "host" else "host"))
        bar.update()

    try:
        for r in range(config.rounds):
            order = list(keys)
            if config.shuffle:
                random.Random(config.seed + r).shuffle(order)
            pending = [k for k in order if (k, r) not in done and not given_up(k)]
            if not pending:
                continue
            if r not in round_states:
                round_states[r] = target.round_state()
                if on_state is not None:
                    on_state(r, round_states[r])
            bar.set_postfix(round=f"{r + 1}/{config.rounds}")
            for key in pending:
                if not given_up(key):  # it may have failed too often earlier in this round
                    attempt(key, r)
        # retry passes: each missing op-round of an op not given up, in round order
        while missing := [(k, r) for r in range(config.rounds) for k in keys if (k, r) not in done and not given_up(k)]:
            bar.set_postfix(round="retry")
            if hasattr(target, "cool_down"):  # re-measured op-rounds wait for the phone to cool first
                target.cool_down()
            for key, r in missing:
                if not given_up(key):
                    attempt(key, r)
    finally:
        bar.close()
    return {k for k in keys if given_up(k)}
