"""The public Python API (issue 14 item 1): every exported name resolves, `import spikescan`
stays light, help(spikescan.Network) says which loss to use, and `spikescan.train` takes torch
Datasets, DataLoaders and dicts of them exactly as it takes a built-in name; output levels
(`quiet`, `progress=False`) and the silent-batch watch."""

import math
import pydoc
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import spikescan
from repo_paths import repo

YY = repo("models/yinyang.snn")
HP = dict(epochs=2, batch_size=16, lr=1e-2, seed=3, engine="torch", t_end=60.0, schedule="cosine",
          loss=dict(tau=0.5, alpha=3e-3, beta=6.4, silent_slope=10.0), threads=1)


def test_every_public_name_resolves():
    for name in spikescan.__all__:
        assert getattr(spikescan, name) is not None, name
    assert spikescan.Network is spikescan.SpikingNetwork
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        spikescan.nope  # noqa: B018


def test_import_spikescan_does_not_import_torch():
    code = "import sys, spikescan; spikescan.__all__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_of_network_tells_a_newcomer_what_to_do():
    text = pydoc.render_doc(spikescan.Network, renderer=pydoc.plaintext)
    for needle in ("first_spike_ce", "+inf", "pad_collate", "ToSpikescan", "readout_loss", "Which loss",
                   "clamp_", "load_network", "docs/tutorial.md"):
        assert needle in text, needle
    out_doc = pydoc.render_doc(spikescan.NetworkOutput, renderer=pydoc.plaintext)
    assert "readout_kind" in out_doc and "+inf = silent" in out_doc


def test_naive_cross_entropy_is_inf_where_first_spike_ce_is_finite():
    """What the docstring warns about: a silent readout neuron has first spike +inf."""
    net = spikescan.Network.from_file(YY, engine="torch", seed=0)
    with torch.no_grad():
        for w in net.layers["out"].weights:
            w.zero_()  # the readout layer never fires
    times = torch.tensor([[1.0, 5.0, 10.0]], dtype=torch.float64)
    channels = torch.tensor([[0, 1, 4]])
    out = net(times, channels, t_end=60.0)
    assert torch.isinf(out.readout).all()
    labels = torch.tensor([1])
    naive = torch.nn.functional.cross_entropy(-out.readout, labels)
    assert not math.isfinite(float(naive))
    good = spikescan.first_spike_ce(out.readout, labels, t_end=60.0)
    assert math.isfinite(float(good))
    assert int(spikescan.predict(out.readout_kind, out.readout)[0]) == -1  # all silent: no prediction


class Samples(Dataset):
    """A plain user Dataset of (times, channels, label) tensors (no t_max attribute)."""

    def __init__(self, base):
        self.items = [base[i] for i in range(len(base))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        t, c, y = self.items[i]
        return torch.tensor(t), torch.tensor(c), int(y)


@pytest.fixture(scope="module")
def yy_splits():
    from spikescan.runtime.train_setup import subset

    return {s: subset(spikescan.get_dataset("yinyang", s), n, HP["seed"])
            for s, n in (("train", 64), ("val", 32), ("test", 32))}


def _weights(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_train_on_datasets_equals_the_built_in_name(yy_splits, tmp_path):
    """The same samples as torch Datasets give the same run, bit for bit, as the dataset's name."""
    lines = []
    named_net = spikescan.Network.from_file(YY, engine="torch", seed=0)
    r1 = spikescan.train(named_net, data="yinyang", limit_train=64, limit_eval=32, out=str(tmp_path / "a"),
                         progress=False, log=lines.append, **HP)
    custom_net = spikescan.Network.from_file(YY, engine="torch", seed=0)
    custom = {s: Samples(ds) for s, ds in yy_splits.items()}
    r2 = spikescan.train(custom_net, data=custom, out=str(tmp_path / "b"), progress=False, log=lines.append, **HP)
    assert r1.test_accuracy == r2.test_accuracy and r1.best_val_accuracy == r2.best_val_accuracy
    w1, w2 = _weights(named_net), _weights(custom_net)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert (tmp_path / "b" / "best.pt").is_file() and (tmp_path / "b" / "curves.png").is_file()
    ck = spikescan.load_checkpoint(tmp_path / "b" / "best.pt")
    assert ck["config"]["data"] is None  # custom data is not a name eval could reopen


def test_train_on_a_dataloader_and_a_held_out_split(yy_splits, tmp_path):
    lines = []
    dl = DataLoader(Samples(yy_splits["train"]), batch_size=16, shuffle=True, collate_fn=spikescan.pad_collate,
                    generator=torch.Generator().manual_seed(0))
    r = spikescan.train(YY, data=dl, val_data=Samples(yy_splits["val"]), out=str(tmp_path / "dl"), progress=False,
                        log=lines.append, **{**HP, "epochs": 1})
    assert 0.0 <= r.test_accuracy <= 1.0
    text = "\n".join(lines)
    assert "train 64" in text and "val 32" in text and "test 32 [the validation split (pass test_data=)]" in text
    # a Dataset alone: 10% held out for validation, said in the summary
    lines.clear()
    spikescan.train(YY, data=Samples(yy_splits["train"]), out=str(tmp_path / "ho"), progress=False,
                    log=lines.append, **{**HP, "epochs": 1})
    assert "train 58 [Samples]; val 6 [10% of the training Dataset, held out (pass val_data=)]" in "\n".join(lines)


def test_custom_data_errors_are_clear(yy_splits, tmp_path):
    kw = dict(out=str(tmp_path / "e"), progress=False, log=lambda m: None, **{**HP, "epochs": 1})
    with pytest.raises(ValueError, match="cannot be re-read every epoch"):
        spikescan.train(YY, data=(x for x in Samples(yy_splits["train"])), **kw)
    bad = [(t, c, 7) for t, c, _ in Samples(yy_splits["train"])]
    with pytest.raises(ValueError, match=r"labels span \[7, 7\] but the readout has 3 neurons"):
        spikescan.train(YY, data=bad, val_data=bad, **kw)
    too_wide = [(t, c + 5, y) for t, c, y in Samples(yy_splits["train"])]
    with pytest.raises(ValueError, match="takes 5 input channels"):
        spikescan.train(YY, data=too_wide, val_data=too_wide, **kw)
    no_t_end = {k: v for k, v in kw.items() if k != "t_end"}
    with pytest.raises(ValueError, match="pass t_end="):
        spikescan.train(YY, data=Samples(yy_splits["train"]), **no_t_end)
    with pytest.raises(ValueError, match="brings its own splits"):
        spikescan.train(YY, data="yinyang", val_data=Samples(yy_splits["val"]), **kw)


def test_quiet_and_no_progress_are_different(tmp_path, capsys):
    from spikescan.cli import main

    base = ["train", YY, "--data", "yinyang", "--epochs", "1", "--limit-train", "32", "--limit-eval", "16",
            "--engine", "torch"]
    assert main(base + ["--no-progress", "--out", str(tmp_path / "np")]) == 0
    cap = capsys.readouterr()
    assert "network yinyang" in cap.err and "epoch 1/1: loss" in cap.err and "engine torch on cpu (f64)" in cap.err
    assert "\r" not in cap.err and "it/s" not in cap.err  # no bars
    assert cap.out.startswith("test accuracy:")
    assert main(base + ["--quiet", "--out", str(tmp_path / "q")]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and cap.out.startswith("test accuracy:")


def test_stall_watch_skips_a_few_silent_batches_then_stops():
    from spikescan.runtime.train_guard import StallWatch, TrainingStalled

    class Out:
        layer_names = ["hidden", "out"]
        counts = [torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64)]
        readout_kind = "max_potential"

    w = StallWatch(3, readout="out")
    w.stalled(Out(), "epoch 1, step 1")
    w.ok()  # a batch with gradient resets the count
    w.stalled(Out(), "epoch 1, step 3")
    w.stalled(Out(), "epoch 1, step 4")
    with pytest.raises(TrainingStalled) as e:
        w.stalled(Out(), "epoch 1, step 5")
    msg = str(e.value)
    assert w.skipped == 4 and "3 batches in a row" in msg and "silent layers: hidden, out" in msg
    assert "use a max_potential readout" not in msg  # it already is one: no wrong hint
    assert "increase the weight init of hidden" in msg
