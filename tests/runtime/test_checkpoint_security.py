"""Checkpoints are untrusted input: loading one never runs code (torch.load weights_only=True, only
tensors and plain data inside), any corruption (truncated, empty, garbage, byte-flipped, missing
keys, wrong shapes) is a one-line error from `eval` and `train --resume`, and a checkpoint is
self-contained: it embeds every source file the model was compiled from."""

import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from spikescan.runtime import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]

TINY = """from "cuba_lif.snn" import CubaLIF

network tiny {
    input  x[5]
    layer  hidden[12] = CubaLIF() <- dense(x, init = normal(1.5, 0.8))
    layer  out[3]     = CubaLIF() <- dense(hidden, init = normal(0.5, 0.4))
    readout out: first_spike
}
"""
TRAIN = ["--data", "yinyang", "--epochs", "1", "--batch-size", "16", "--limit-train", "16", "--limit-eval", "16",
         "--no-progress", "--engine", "torch"]


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "models" / "cuba_lif.snn", folder / "cuba_lif.snn")
    (folder / "tiny.snn").write_text(TINY)
    return folder / "tiny.snn"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run (1 epoch, 16 samples); tests copy its folder before changing it."""
    from spikescan.cli import main

    base = tmp_path_factory.mktemp("ck")
    model = _model(base / "models")
    assert main(["train", str(model), *TRAIN, "--out", str(base / "run")]) == 0
    return base


def _copy_run(trained, tmp_path) -> Path:
    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def _cli(capsys, *argv):
    from spikescan.cli import main

    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _crafted(path: Path, marker: Path) -> None:
    torch.save({"format": ckpt.FORMAT, "state_dict": {}, "payload": _Evil(marker)}, path)


def test_crafted_pickle_is_effective_but_never_runs(tmp_path):
    bad, marker = tmp_path / "evil.pt", tmp_path / "marker"
    _crafted(bad, marker)
    torch.load(bad, weights_only=False)  # the attack works on an unsafe loader ...
    assert marker.read_text() == "pwned"
    marker.unlink()
    with pytest.raises(ckpt.CheckpointError, match="could run code"):  # ... and not on ours
        ckpt.load_checkpoint(bad)
    assert not marker.exists()


def test_crafted_checkpoint_under_eval_and_resume(trained, tmp_path, capsys):
    marker = tmp_path / "marker"
    bad = tmp_path / "best.pt"
    _crafted(bad, marker)
    rc, out, err = _cli(capsys, "eval", str(bad), "--data", "yinyang", "--limit", "8")
    assert rc == 1 and "could run code" in err and "Traceback" not in err and not marker.exists()
    run = _copy_run(trained, tmp_path)
    _crafted(run / "last.pt", marker)
    rc, out, err = _cli(capsys, "train", str(trained / "models" / "tiny.snn"), *TRAIN, "--epochs", "2",
                        "--out", str(run), "--resume")
    assert rc == 1 and "could run code" in err and not marker.exists()
    assert len(err.strip().splitlines()) == 1


def test_checkpoint_holds_only_plain_data(trained):
    ck = ckpt.load_checkpoint(trained / "run" / "best.pt")

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                assert isinstance(k, (str, int))
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        else:
            assert x is None or isinstance(x, (torch.Tensor, str, int, float, bool)), type(x)

    walk(ck)
    assert ck["format"] == ckpt.FORMAT and ck["digest"] == ckpt.digest(ck)


def _rewrite(src: Path, dst: Path, edit) -> None:
    ck = torch.load(src, weights_only=True)
    edit(ck)
    ck["digest"] = ckpt.digest(ck)  # a consistent file: only the validation can refuse it
    torch.save(ck, dst)


def _silent_flip(data: bytes) -> bytes:
    """A one-bit flip that torch.load itself accepts but that changes the content (in tensor
    bytes, say): only the digest can catch it."""
    for i in range(len(data) // 2, len(data)):
        b = bytearray(data)
        b[i] ^= 0x01
        try:
            ck = torch.load(io.BytesIO(bytes(b)), weights_only=True)
        except Exception:  # noqa: BLE001
            continue
        if ckpt.digest(ck) != ck.get("digest"):
            return bytes(b)
    raise AssertionError("no silent flip found")


def _corruptions(good: Path, tmp: Path) -> dict:
    data = good.read_bytes()
    out = {"empty": b"", "truncated": data[: len(data) // 2], "garbage": os.urandom(2000),
           "text": b"not a checkpoint\n"}
    out["byte-flipped"] = _silent_flip(data)
    for name, edit in {
        "missing-key": lambda ck: ck.pop("state_dict"),
        "wrong-shape": lambda ck: ck["state_dict"].update(
            {k: torch.zeros(7, dtype=torch.float64) for k in list(ck["state_dict"])[:1]}),
        "wrong-type": lambda ck: ck.update(epoch="one"),
        "nan-weights": lambda ck: ck["state_dict"].update(
            {k: v * float("nan") for k, v in list(ck["state_dict"].items())[:1]}),
        "bad-source-path": lambda ck: ck["model_sources"].update({"../../../escape.snn": "x"}),
        "bad-option": lambda ck: ck["net_kwargs"].update(chunk="big"),
    }.items():
        p = tmp / f"{name}.pt"
        _rewrite(good, p, edit)
        out[name] = p.read_bytes()
    return out


def test_every_corruption_is_one_line_under_eval(trained, tmp_path, capsys):
    for name, data in _corruptions(trained / "run" / "best.pt", tmp_path).items():
        p = tmp_path / f"c-{name}.pt"
        p.write_bytes(data)
        rc, out, err = _cli(capsys, "eval", str(p), "--data", "yinyang", "--limit", "8")
        assert rc == 1, (name, out, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (name, err)
        assert "Traceback" not in err and "internal error" not in err, (name, err)
        assert str(p) in err or "checkpoint" in err, (name, err)


def test_byte_flips_anywhere_are_caught_or_harmless(trained):
    good = (trained / "run" / "best.pt").read_bytes()
    base = torch.load(io.BytesIO(good), weights_only=True)["digest"]
    tmp = trained / "flip.pt"
    caught = 0
    for i in range(0, len(good), max(1, len(good) // 300)):
        b = bytearray(good)
        b[i] ^= 0x10
        tmp.write_bytes(bytes(b))
        try:
            ck = ckpt.load_checkpoint(tmp)
        except ckpt.CheckpointError:
            caught += 1
            continue
        assert ck["digest"] == base  # loaded: then the content is exactly the original
    assert caught > 100


@pytest.mark.parametrize("which", ["last", "best"])
def test_corrupt_checkpoint_on_resume_fails_before_training(trained, tmp_path, capsys, which):
    run = _copy_run(trained, tmp_path)
    (run / f"{which}.pt").write_bytes((run / f"{which}.pt").read_bytes()[:100])
    before = (run / "metrics.jsonl").read_text()
    rc, out, err = _cli(capsys, "train", str(trained / "models" / "tiny.snn"), *TRAIN, "--epochs", "2",
                        "--out", str(run), "--resume")
    assert rc == 1 and f"{which}.pt" in err and "corrupt" in err and len(err.strip().splitlines()) == 1
    assert (run / "metrics.jsonl").read_text() == before  # no epoch ran, nothing rewritten


def test_checkpoint_embeds_all_sources_and_survives_a_moved_model(trained, tmp_path, capsys, monkeypatch):
    run = _copy_run(trained, tmp_path)
    ck = ckpt.load_checkpoint(run / "best.pt")
    assert sorted(Path(p).name for p in ck["model_sources"]) == ["cuba_lif.snn", "tiny.snn"]
    rc, out, _ = _cli(capsys, "eval", str(run / "best.pt"), "--data", "yinyang", "--limit", "16")
    assert rc == 0
    expected = json.loads(out)
    # move the model folder away and plant a different (broken) model at the old place and in
    # the search path: eval must read neither
    moved = trained / "models-moved"
    shutil.move(str(trained / "models"), str(moved))
    try:
        (trained / "models").mkdir()
        (trained / "models" / "cuba_lif.snn").write_text("this is not a model")
        (trained / "models" / "tiny.snn").write_text("neither is this")
        monkeypatch.setenv("SPIKESCAN_PATH", str(trained / "models"))
        rc, out, err = _cli(capsys, "eval", str(run / "best.pt"), "--data", "yinyang", "--limit", "16")
        assert rc == 0, err
        assert json.loads(out)["accuracy"] == expected["accuracy"]
        assert json.loads(out)["loss"] == expected["loss"]
    finally:
        shutil.rmtree(trained / "models")
        shutil.move(str(moved), str(trained / "models"))


def test_imports_from_the_search_path_are_embedded(tmp_path, monkeypatch, capsys):
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(ROOT / "models" / "cuba_lif.snn", lib / "cuba_lif.snn")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "tiny.snn").write_text(TINY)
    monkeypatch.setenv("SPIKESCAN_PATH", str(lib))
    rc, _, err = _cli(capsys, "train", str(tmp_path / "m" / "tiny.snn"), *TRAIN, "--out", str(tmp_path / "run"))
    assert rc == 0, err
    shutil.rmtree(lib)
    monkeypatch.delenv("SPIKESCAN_PATH")
    rc, out, err = _cli(capsys, "eval", str(tmp_path / "run" / "best.pt"), "--data", "yinyang", "--limit", "8")
    assert rc == 0, err
    assert json.loads(out)["n"] == 8


def test_save_refuses_non_finite_state_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"epoch": 1, "state_dict": {"w": torch.ones(3)}, "optimizer": {}})
    before = path.read_bytes()
    for bad in ({"state_dict": {"w": torch.tensor([1.0, float("nan")])}},
                {"state_dict": {"w": torch.ones(3)}, "optimizer": {"state": {0: {"exp_avg": torch.tensor([float("inf")])}}}},
                {"state_dict": {"w": torch.ones(3)}, "optimizer": {"param_groups": [{"lr": float("inf")}]}}):
        with pytest.raises(ckpt.CheckpointError, match="not finite"):
            ckpt.save_checkpoint(path, {"epoch": 2, **bad})
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_write_failure_is_an_oserror_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"epoch": 1, "state_dict": {"w": torch.ones(3)}})
    before = path.read_bytes()

    def full(obj, f, *a, **kw):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(OSError, match="No space left on device") as e:
        ckpt.save_checkpoint(path, {"epoch": 2, "state_dict": {"w": torch.zeros(3)}})
    assert "last.pt" in str(e.value) and e.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_checkpoint_of_an_in_memory_network_says_it_has_no_source(trained, tmp_path):
    p = tmp_path / "mem.pt"
    _rewrite(trained / "run" / "best.pt", p, lambda ck: ck.update(model_sources={}, model_path="", model_roots=[]))
    from spikescan.runtime.train import network_from_checkpoint

    with pytest.raises(ckpt.CheckpointError, match="embeds no model source"):
        network_from_checkpoint(ckpt.load_checkpoint(p), path=p)
