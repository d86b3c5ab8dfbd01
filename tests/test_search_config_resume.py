"""A search's run record: config.yaml (presets, --config, flags over the file), the checkpoint that
a killed search resumes from to the same θ and arch, and FBNet's last step (--final-samples)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from search.config import PRESETS, SEARCH_KEYS
from search.run import SEARCH_STATE, main
from search.strategies import SearchConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
# a search of a few seconds an epoch on one thread: 130 digits, 104 for the weights (7 steps of 16),
# 26 for θ (batches of 16 and 10)
SMALL = ["--subset", "130", "--batch-size", "16", "--train-epochs", "0", "--torch-threads", "1", "--samples", "2",
         "--recalib-batches", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def lut_dir(tmp_path_factory: pytest.TempPathFactory, write_synthetic_lut) -> Path:
    return write_synthetic_lut(tmp_path_factory.mktemp("lut"), "fbnet")


def _search(lut_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "search.run", "--lut", str(lut_dir), "--out", str(out), *SMALL, *extra]


def _state(out: Path) -> dict:
    return torch.load(out / SEARCH_STATE, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_a_killed_search_resumes_to_the_same_theta_and_arch(lut_dir, tmp_path) -> None:
    """SIGKILL in the middle of an epoch of a real process; --resume ends where an uninterrupted
    run of the same seed and threads ends: the same θ (allclose), arch and log."""
    args = ["--epochs", "3", "--warmup-epochs", "1", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = tmp_path / "whole"
    subprocess.run(_search(lut_dir, whole, *args), check=True, capture_output=True, cwd=REPO, env=env, timeout=600)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(_search(lut_dir, cut, *args), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if (cut / SEARCH_STATE).exists() and _state(cut)["epoch"] >= 2:  # warm-up and one search epoch
                break
            time.sleep(0.02)
        time.sleep(0.1)  # into the next epoch's steps
        assert proc.poll() is None, "the search ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = _state(cut)["epoch"]
    assert killed_at in (2, 3) and not (cut / "arch.json").exists()
    if killed_at == 2:  # 7 θ steps so far on 26 images (batches of 16 + 10): in the middle of a pass
        assert _state(cut)["search"]["parts"]["arch_batches"]["pos"] == 1

    done = subprocess.run([sys.executable, "-m", "search.run", "--resume", "--out", str(cut), "--json"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["resumed_from_epoch"] == killed_at
    _same_search(whole, cut, epochs=4)


def _same_search(a_dir: Path, b_dir: Path, epochs: int) -> None:
    a, b = _state(a_dir), _state(b_dir)
    assert a["epoch"] == b["epoch"] == epochs
    assert torch.allclose(a["search"]["logits"], b["search"]["logits"], atol=1e-5)
    arch_a, arch_b = (json.loads((d / "arch.json").read_text()) for d in (a_dir, b_dir))
    assert arch_a["blocks"] == arch_b["blocks"]
    rows_a, rows_b = ((d / "log.csv").read_text().splitlines() for d in (a_dir, b_dir))
    assert len(rows_a) == len(rows_b) == epochs + 1  # header + every epoch, none lost or repeated
    assert [r.split(",")[:6] for r in rows_a] == [r.split(",")[:6] for r in rows_b]  # epoch … train_acc


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["proxyless", "darts"])
def test_an_interrupted_search_resumes_exactly(strategy, lut_dir, tmp_path, monkeypatch) -> None:
    """The other differentiable strategies: a run stopped after its first epoch's checkpoint and
    resumed ends with the θ, arch and log of the run that was never stopped."""
    from lut.store import load_lut
    from search import run as run_mod
    from search.latency import LatencyModel
    from search.space import get_space

    lat = LatencyModel.from_lut(load_lut(lut_dir))
    proxy = get_space("fbnet-r32-w0.25")
    cfg = SearchConfig(strategy=strategy, epochs=2, warmup_epochs=1, batch_size=16, num_samples=2,
                       recalib_batches=1, seed=5)  # fmt: skip
    run_search = run_mod.run_search
    run_search(cfg, lat, proxy, out=tmp_path / "whole", subset=130)

    real = run_mod.save_checkpoint

    def stop_after_first(path, state):
        real(path, state)
        raise KeyboardInterrupt  # the process dies right after the first checkpoint

    monkeypatch.setattr(run_mod, "save_checkpoint", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, lat, proxy, out=tmp_path / "cut", subset=130)
    monkeypatch.setattr(run_mod, "save_checkpoint", real)
    assert _state(tmp_path / "cut")["epoch"] == 1
    summary = run_search(cfg, lat, proxy, out=tmp_path / "cut", subset=130, resume=True)
    assert summary["resumed_from_epoch"] == 1
    _same_search(tmp_path / "whole", tmp_path / "cut", epochs=3)

    with pytest.raises(ValueError, match="different run"):  # another config is another run
        run_search(replace(cfg, seed=6), lat, proxy, out=tmp_path / "cut", subset=130, resume=True)


@pytest.mark.slow
def test_paper_preset_config_yaml_reruns_and_picks_the_best_sampled_arch(lut_dir, tmp_path) -> None:
    """--preset fbnet-paper writes the paper's values into config.yaml (flags given beside it
    override them); --final-samples trains distinct archs drawn from θ and keeps the best by
    validation; --config config.yaml runs the same search again."""
    first = tmp_path / "paper"
    cut = ["--epochs", "1", "--warmup-epochs", "1", "--final-samples", "3", "--final-epochs", "1"]
    assert main(["--lut", str(lut_dir), "--out", str(first), "--preset", "fbnet-paper", *SMALL, *cut]) == 0
    conf = yaml.safe_load((first / "config.yaml").read_text())
    paper = PRESETS["fbnet-paper"]
    for k in ("alpha", "beta", "tau_decay", "tau0", "theta_lr", "theta_weight_decay", "w_lr", "w_momentum",
              "w_weight_decay", "entropy_weight", "mask_threshold", "alternate", "tau_schedule",
              "w_fraction"):  # fmt: skip
        assert conf[k] == paper[k], k
    assert conf["preset"] == "fbnet-paper" and conf["strategy"] == "fbnet"
    assert (conf["epochs"], conf["warmup_epochs"], conf["batch_size"], conf["final_samples"]) == (1, 1, 16, 3)
    assert set(SEARCH_KEYS) <= set(conf)

    arch = json.loads((first / "arch.json").read_text())
    with (first / "candidates.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert 1 <= len(rows) <= 3 and len({r["blocks"] for r in rows}) == len(rows)  # distinct
    chosen = [r for r in rows if r["chosen"] == "1"]
    assert len(chosen) == 1
    assert float(chosen[0]["val_accuracy"]) == max(float(r["val_accuracy"]) for r in rows)
    assert chosen[0]["blocks"].split() == arch["blocks"]
    assert abs(float(chosen[0]["predicted_latency_us"]) - arch["info"]["predicted_latency_us"]) < 1e-2
    assert arch["info"]["final_selection"]["epochs"] == 1
    assert arch["info"]["arch_split_accuracy"] == pytest.approx(float(chosen[0]["val_accuracy"]), abs=1e-4)

    again = tmp_path / "again"
    assert main(["--config", str(first / "config.yaml"), "--out", str(again), "--final-samples", "0"]) == 0
    conf2 = yaml.safe_load((again / "config.yaml").read_text())
    assert conf2["final_samples"] == 0  # the flag over the file
    conf2.pop("final_samples")
    conf.pop("final_samples")
    assert conf2 == conf
    assert torch.allclose(_state(first)["search"]["logits"], _state(again)["search"]["logits"], atol=1e-6)


def test_every_preset_sets_only_known_keys_and_the_papers_differ_from_the_default() -> None:
    from search.run import build_parser

    keys = {a.dest for a in build_parser()._actions} | set(SEARCH_KEYS)
    for name, values in PRESETS.items():
        assert set(values) <= keys, (name, set(values) - keys)
    fb = PRESETS["fbnet-paper"]
    assert (fb["alpha"], fb["beta"], fb["tau0"], fb["tau_decay"]) == (0.2, 0.6, 5.0, 0.045)
    assert (fb["theta_lr"], fb["theta_weight_decay"], fb["w_lr"], fb["w_momentum"]) == (0.01, 5e-4, 0.1, 0.9)
    assert (fb["batch_size"], fb["warmup_epochs"], fb["epochs"]) == (192, 10, 80)
    assert (fb["entropy_weight"], fb["mask_threshold"]) == (0.0, 0.0)  # no commitment term, no skipped paths
    assert fb["tau_schedule"] == "paper" and fb["alternate"] == "epoch"
    assert SearchConfig().entropy_weight > 0  # the default keeps its tuned values
    docs = (REPO / "docs" / "presets.md").read_text()
    for name, values in PRESETS.items():
        assert f"`{name}`" in docs
        for k in values:
            assert f"`{k}`" in docs, (name, k)


@pytest.mark.parametrize("content, message", [
    ("alpha: 0.2\nbogus_key: 1\n", "unknown configuration key 'bogus_key'"),
    ("theta_lr: fast\n", "configuration key 'theta_lr'"),
    ("alternate: sometimes\n", "'sometimes' is not one of"),
    ("- a list\n", "must hold a mapping"),
    ("preset: nope\n", "unknown preset 'nope'"),
])  # fmt: skip
def test_a_bad_config_file_is_one_message_and_exit_2(content, message, lut_dir, tmp_path, capsys) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(content)
    assert main(["--lut", str(lut_dir), "--out", str(tmp_path / "o"), "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert not (tmp_path / "o").exists()  # nothing started, nothing written


def test_resume_needs_a_run_to_continue(lut_dir, tmp_path, capsys) -> None:
    assert main(["--resume", "--out", str(tmp_path / "none")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    (tmp_path / "evo").mkdir()
    (tmp_path / "evo" / "config.yaml").write_text(f"lut: {lut_dir}\nstrategy: evolution\nfitness: oneshot\n")
    assert main(["--resume", "--out", str(tmp_path / "evo")]) == 2
    assert "writes no checkpoint" in capsys.readouterr().err
    (tmp_path / "fb").mkdir()
    (tmp_path / "fb" / "config.yaml").write_text(f"lut: {lut_dir}\nsubset: 64\nepochs: 1\n")
    assert main(["--resume", "--out", str(tmp_path / "fb")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_yaml_numbers_in_exponent_form_are_read_as_numbers(tmp_path) -> None:
    from search.config import coerce, config_actions, key_types
    from search.run import build_parser

    types = key_types({a.dest: a.type for a in config_actions(build_parser())})
    assert set(SEARCH_KEYS) <= set(types)  # every SearchConfig field can be set from a file
    assert coerce("theta_lr", "1e-4", types, {}) == 1e-4  # YAML 1.1 reads 1e-4 as a string
    assert coerce("theta_betas", [0.5, 0.999], types, {}) == (0.5, 0.999)
    assert coerce("epochs", 3.0, types, {}) == 3


def test_a_library_run_writes_a_config_the_cli_runs_again(lut_dir, tmp_path) -> None:
    """run_search called directly (as search.crossdevice does) writes config.yaml too, and
    `--config` accepts it: every key it holds is a configuration key."""
    from lut.store import load_lut
    from search.latency import LatencyModel
    from search.run import run_search
    from search.space import get_space

    cfg = SearchConfig(epochs=1, warmup_epochs=0, batch_size=16, num_samples=1, recalib_batches=1)
    lat = LatencyModel.from_lut(load_lut(lut_dir))
    first = run_search(cfg, lat, get_space("fbnet-r32-w0.25"), out=tmp_path / "lib", subset=64)
    conf = yaml.safe_load((tmp_path / "lib" / "config.yaml").read_text())
    assert conf["subset"] == 64 and conf["proxy_space"] == "fbnet-r32-w0.25" and conf["epochs"] == 1
    assert main(["--config", str(tmp_path / "lib" / "config.yaml"), "--out", str(tmp_path / "cli"),
                 "--torch-threads", "1"]) == 0  # fmt: skip
    again = json.loads((tmp_path / "cli" / "arch.json").read_text())
    assert again["blocks"] == first["blocks"]


def test_proxyless_takes_an_arch_step_after_every_nth_weight_step(lut_dir, tmp_path) -> None:
    """proxyless_arch_every (the reference code's --grad_update_arch_param_every): 104 weight-split
    images in batches of 16 are 7 weight steps an epoch, so 7 architecture steps at n = 1, 2 at n = 3."""
    from lut.store import load_lut
    from search.latency import LatencyModel
    from search.run import run_search
    from search.space import get_space

    lat = LatencyModel.from_lut(load_lut(lut_dir))
    cfg = SearchConfig(strategy="proxyless", epochs=1, warmup_epochs=0, batch_size=16, num_samples=1, recalib_batches=1)
    steps = {}
    for n in (1, 3):
        run_search(replace(cfg, proxyless_arch_every=n), lat, get_space("fbnet-r32-w0.25"), out=tmp_path / f"n{n}",
                   subset=130)  # fmt: skip
        steps[n] = json.loads((tmp_path / f"n{n}" / "arch.json").read_text())["info"]["arch_steps"]
    assert steps == {1: 7, 3: 2}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_an_interrupted_evolution_resumes_with_the_archs_it_scored(strategy, lut_dir, tmp_path, monkeypatch) -> None:
    """Evolution and random search (fitness "train") checkpoint every arch they score; a resumed
    run replays its draws, trains only the archs not scored yet, and ends as the whole run does."""
    from lut.store import load_lut
    from search import run as run_mod
    from search.latency import LatencyModel
    from search.space import get_space

    lat = LatencyModel.from_lut(load_lut(lut_dir))
    proxy = get_space("fbnet-r32-w0.25")
    cfg = SearchConfig(strategy=strategy, cycles=4, population=2, tournament=2, fitness_epochs=1, batch_size=16,
                       seed=1)  # fmt: skip
    whole = run_mod.run_search(cfg, lat, proxy, out=tmp_path / "whole", subset=130)

    real = run_mod.save_checkpoint

    def stop_after_two(path, state):
        real(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # killed after the second arch was scored

    monkeypatch.setattr(run_mod, "save_checkpoint", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_mod.run_search(cfg, lat, proxy, out=tmp_path / "cut", subset=130)
    monkeypatch.setattr(run_mod, "save_checkpoint", real)
    trained = []
    monkeypatch.setattr(run_mod, "save_checkpoint", lambda path, state: (trained.append(state["epoch"]),
                                                                          real(path, state)))  # fmt: skip
    again = run_mod.run_search(cfg, lat, proxy, out=tmp_path / "cut", subset=130, resume=True)
    assert again["resumed_from_epoch"] == 2
    assert trained and trained == list(range(3, 3 + len(trained)))  # the archs not scored yet, none twice
    assert again["blocks"] == whole["blocks"]
    assert again["arch_split_accuracy"] == whole["arch_split_accuracy"] and again["test_accuracy"] == whole["test_accuracy"]
    log_a, log_b = ((tmp_path / d / "log.csv").read_text().splitlines() for d in ("whole", "cut"))
    assert [r.split(",")[:4] for r in log_a] == [r.split(",")[:4] for r in log_b]  # cycle, phase, fitness, val_acc
