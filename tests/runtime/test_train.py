"""Training loop end to end on tiny Yin-Yang subsets with the real torch engine: the loss goes
down, runs are deterministic and resumable, checkpoints are atomic, a NaN stops training and
leaves the last good checkpoint, and the train/eval CLI works."""

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from spikescan.runtime import checkpoint as ckpt
from spikescan.runtime import losses

ROOT = Path(__file__).resolve().parents[2]

TINY = """from "cuba_lif.snn" import CubaLIF

network tiny {
    input  x[5]
    layer  hidden[12] = CubaLIF() <- dense(x, init = normal(1.5, 0.8))
    layer  out[3]     = CubaLIF() <- dense(hidden, init = normal(0.5, 0.4))
    readout out: first_spike
}
"""

FAST = dict(data="yinyang", batch_size=16, lr=1e-2, limit_train=48, limit_eval=32, progress=False, seed=0,
            engine="torch")


@pytest.fixture()
def tiny_snn(tmp_path):
    shutil.copy(ROOT / "models" / "cuba_lif.snn", tmp_path / "cuba_lif.snn")
    p = tmp_path / "tiny.snn"
    p.write_text(TINY)
    return p


def _train(*a, **kw):
    from spikescan.runtime.train import train

    return train(*a, **kw)


def _fixed_loss(net, n=48):
    from spikescan.runtime.data import get_dataset
    from spikescan.runtime.losses import LossConfig
    from spikescan.runtime.train import DATASET_DEFAULTS, _loader, _subset, evaluate

    ds = _subset(get_dataset("yinyang", "train"), n)
    d = DATASET_DEFAULTS["yinyang"]
    return evaluate(net, _loader(ds, 16, False, 0), LossConfig(**d["loss"]), d["t_end"])["loss"]


def test_short_training_reduces_loss(tiny_snn, tmp_path):
    from spikescan.runtime.network import SpikingNetwork

    before = _fixed_loss(SpikingNetwork.from_file(tiny_snn, engine="torch", seed=0))
    res = _train(str(tiny_snn), epochs=3, out=str(tmp_path / "run"), schedule="none", **FAST)
    after = _fixed_loss(res.model)
    assert after < before - 0.02, (before, after)
    assert 0.0 <= res.test_accuracy <= 1.0 and len(res.history) == 3
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l.get("epoch") for l in lines[:3]] == [1, 2, 3]
    assert lines[-1]["final"] and lines[-1]["test_accuracy"] == res.test_accuracy
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_resume_matches_uninterrupted_run(tiny_snn, tmp_path):
    # constant lr so that "1 epoch, then resume to 2" and "2 epochs" share the schedule
    full = _train(str(tiny_snn), epochs=2, out=str(tmp_path / "a"), schedule="none", **FAST)
    _train(str(tiny_snn), epochs=1, out=str(tmp_path / "b"), schedule="none", **FAST)
    # everything is rebuilt from last.pt (weights, Adam state, epoch): as in a fresh process
    resumed = _train(str(tiny_snn), epochs=2, out=str(tmp_path / "b"), resume=True, schedule="none", **FAST)
    a = ckpt.load_checkpoint(tmp_path / "a" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert resumed.test_accuracy == full.test_accuracy
    epochs = [json.loads(l).get("epoch") for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert epochs[:2] == [1, 2]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    before = path.read_bytes()
    real = torch.save

    def dies_midway(obj, f, *a, **kw):
        real(obj, f, *a, **kw)
        f.truncate(10)
        raise RuntimeError("boom while writing")

    monkeypatch.setattr(ckpt.torch, "save", dies_midway)
    with pytest.raises(RuntimeError, match="boom"):
        ckpt.save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before  # old checkpoint untouched
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temp file left behind
    assert torch.load(path, weights_only=True)["epoch"] == 1
    with pytest.raises(TypeError, match="plain data"):  # only tensors and plain data are saved
        ckpt.save_checkpoint(path, {"epoch": 2, "bad": object()})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_snn, tmp_path, monkeypatch):
    from spikescan.runtime.train import TrainingDiverged

    out = tmp_path / "run"
    _train(str(tiny_snn), epochs=1, out=str(out), **FAST)
    good = ckpt.load_checkpoint(out / "last.pt")
    real = losses.readout_loss
    calls = {"n": 0}

    def poisoned(*a, **kw):
        calls["n"] += 1
        loss = real(*a, **kw)
        return loss * math.nan if calls["n"] == 2 else loss  # NaN at the second step of epoch 2

    monkeypatch.setattr(losses, "readout_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"last\.pt \(epoch 1\)"):
        _train(str(tiny_snn), epochs=3, out=str(out), resume=True, **FAST)
    after = ckpt.load_checkpoint(out / "last.pt")
    assert after["epoch"] == 1
    for k, v in good["state_dict"].items():
        assert torch.equal(v, after["state_dict"][k]) and torch.isfinite(v).all()


def test_cli_train_then_eval(tiny_snn, tmp_path, capsys):
    from spikescan.cli import main

    out = tmp_path / "cli"
    rc = main(["train", str(tiny_snn), "--data", "yinyang", "--epochs", "1", "--batch-size", "16", "--limit-train",
               "32", "--limit-eval", "32", "--out", str(out), "--no-progress", "--engine", "torch"])
    text = capsys.readouterr().out
    assert rc == 0 and "test accuracy:" in text
    acc = float(text.split("test accuracy:")[1].split()[0])
    final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["test_accuracy"] == pytest.approx(acc, abs=1e-4)
    rc = main(["eval", str(out / "best.pt"), "--data", "yinyang", "--limit", "32"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and 0.0 <= res["accuracy"] <= 1.0 and math.isfinite(res["loss"]) and res["n"] == 32
    assert res["accuracy"] == pytest.approx(final["test_accuracy"])  # same weights, same test samples
    # errors are messages, not tracebacks
    assert main(["eval", str(tmp_path / "nope.pt"), "--data", "yinyang"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_silent_network_stops_with_a_message_naming_the_layers(tmp_path):
    """A network whose hidden layer never spikes has no exact gradient: training must say so
    (which layers are silent, what to change) instead of failing inside autograd."""
    from spikescan.runtime.train import TrainingStalled

    shutil.copy(ROOT / "models" / "cuba_lif.snn", tmp_path / "cuba_lif.snn")
    p = tmp_path / "silent.snn"
    p.write_text(TINY.replace("normal(1.5, 0.8)", "normal(0.0, 0.001)"))
    with pytest.raises(TrainingStalled) as e:
        _train(p, out=str(tmp_path / "run"), epochs=1, **FAST)
    msg = str(e.value)
    assert "hidden: 0.00" in msg and "init" in msg


def test_absurd_lr_stops_on_overflowing_parameters_and_names_an_existing_file(tiny_snn, tmp_path):
    """--lr 1e300 used to train to the end with weights near 1e300; with 2 steps per epoch the
    message named `last.pt (epoch 0)`, which did not exist."""
    from spikescan.runtime.train import PARAM_BOUND, TrainingDiverged

    out = tmp_path / "run"
    kw = {**FAST, "limit_train": 32}  # 2 steps per epoch
    with pytest.raises(TrainingDiverged) as e:
        _train(str(tiny_snn), epochs=2, out=str(out), **{**kw, "lr": 1e300})
    msg = str(e.value)
    assert "overflow" in msg and "epoch 1, step 1" in msg and f"bound {PARAM_BOUND:g}" in msg
    assert "No checkpoint was written" in msg
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()
    _train(str(tiny_snn), epochs=1, out=str(out), **kw)
    before = {n: (out / n).read_bytes() for n in ("last.pt", "best.pt")}
    with pytest.raises(TrainingDiverged, match=r"last\.pt \(epoch 1\)") as e:
        _train(str(tiny_snn), epochs=2, out=str(out), resume=True, **{**kw, "lr": 1e300})
    named = str(e.value).split("checkpoint is ")[1].split(" (epoch")[0]
    assert Path(named).is_file() and Path(named) == out / "last.pt"
    assert {n: (out / n).read_bytes() for n in before} == before  # intact
    for n in before:
        ck = ckpt.load_checkpoint(out / n)
        assert all(torch.isfinite(v).all() and v.abs().max() < PARAM_BOUND for v in ck["state_dict"].values())


def test_overflowing_gradient_stops_before_the_update(tiny_snn, tmp_path, monkeypatch):
    from spikescan.runtime.train import TrainingDiverged

    real = losses.readout_loss
    monkeypatch.setattr(losses, "readout_loss", lambda *a, **kw: real(*a, **kw) * 1e120)  # finite loss
    with pytest.raises(TrainingDiverged, match="the gradient of .* reaches .* before the update"):
        _train(str(tiny_snn), epochs=1, out=str(tmp_path / "run"), **FAST)


def test_inf_lr_is_refused_before_anything_is_written(tiny_snn, tmp_path, capsys):
    from spikescan.cli import main

    for lr in ("inf", "nan", "-1", "0"):
        rc = main(["train", str(tiny_snn), "--data", "yinyang", "--lr", lr, "--out", str(tmp_path / "r"), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 1 and "--lr must be a finite number > 0" in err, err
    assert not (tmp_path / "r").exists()


def test_resume_with_more_epochs_replans_the_cosine_schedule(tiny_snn, tmp_path, capsys):
    """1 epoch, then --resume to 2, must train exactly like 2 epochs (the cosine schedule used
    to stay planned for 1 epoch: the second ran at the floor rate)."""
    full = _train(str(tiny_snn), epochs=2, out=str(tmp_path / "a"), schedule="cosine", **FAST)
    _train(str(tiny_snn), epochs=1, out=str(tmp_path / "b"), schedule="cosine", **FAST)
    logs = []
    resumed = _train(str(tiny_snn), epochs=2, out=str(tmp_path / "b"), resume=True, schedule="cosine",
                     log=logs.append, **FAST)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in full.history]
    assert full.history[1]["lr"] > 0.5 * FAST["lr"]  # the middle of the cosine, not its floor
    assert any("re-planning the cosine" in m for m in logs)
    a = ckpt.load_checkpoint(tmp_path / "a" / "last.pt")["state_dict"]
    b = ckpt.load_checkpoint(tmp_path / "b" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="beyond --epochs 1"):
        _train(str(tiny_snn), epochs=1, out=str(tmp_path / "b"), resume=True, **FAST)


def test_a_missing_split_fails_before_the_first_epoch(tiny_snn, tmp_path, monkeypatch):
    from spikescan.runtime import data
    from spikescan.runtime.data import DatasetNotFound

    real = data.get_dataset

    def no_test_split(name, split, *a, **kw):
        if split == "test":
            raise DatasetNotFound("shd_test.h5 not found in /nowhere")
        return real(name, split, *a, **kw)

    monkeypatch.setattr(data, "get_dataset", no_test_split)
    with pytest.raises(DatasetNotFound, match="shd_test.h5"):
        _train(str(tiny_snn), epochs=1, out=str(tmp_path / "run"), **FAST)
    assert not (tmp_path / "run" / "last.pt").exists()  # no epoch was trained first
