"""`spikescan train --data-opt KEY=VALUE` parsing, and the message when a dataset's channels do
not fit the network's inputs."""

import shutil
from pathlib import Path

import pytest

from spikescan.runtime.cli_train import parse_data_opts

ROOT = Path(__file__).resolve().parents[2]


def test_data_opts_parse_json_booleans_and_strings():
    opts = parse_data_opts(["downsample=2", "merge_polarity=true", "t_max=30.5", "cap_mode=first"])
    assert opts == {"downsample": 2, "merge_polarity": True, "t_max": 30.5, "cap_mode": "first"}


@pytest.mark.parametrize("bad", ["downsample", "=2", "2x=1"])
def test_data_opts_reject_malformed_items(bad):
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_data_opts([bad])


def test_channel_mismatch_names_both_sizes_and_the_fix(tmp_path, capsys):
    from spikescan.cli import main

    shutil.copy(ROOT / "models" / "cuba_lif.snn", tmp_path / "cuba_lif.snn")
    net = tmp_path / "small.snn"
    net.write_text('from "cuba_lif.snn" import CubaLIF\nnetwork small {\n  input x[3]\n'
                   '  layer out[3] = CubaLIF() <- dense(x)\n  readout out: first_spike\n}\n')
    rc = main(["train", str(net), "--data", "yinyang", "--epochs", "1", "--limit-train", "8",
               "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "5 input channels" in err and "takes 3" in err and "--data-opt" in err


class _Sorted:
    """A dataset stored in class order, like N-MNIST's folders: 50 of class 0, 30 of 1, 20 of 2."""

    labels = [0] * 50 + [1] * 30 + [2] * 20

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return i


def test_limits_take_a_seeded_stratified_subset():
    from collections import Counter

    from spikescan.runtime.train import _subset

    ds = _Sorted()
    sub = _subset(ds, 10, seed=0)
    picked = list(sub.indices)
    assert Counter(ds.labels[i] for i in picked) == {0: 5, 1: 3, 2: 2}  # the first 10 would all be class 0
    assert picked == sorted(picked) and len(set(picked)) == 10
    assert list(_subset(ds, 10, seed=0).indices) == picked  # deterministic
    assert list(_subset(ds, 10, seed=1).indices) != picked  # and seeded
    shares = Counter(ds.labels[i] for i in _subset(ds, 7, seed=3).indices)
    assert sum(shares.values()) == 7 and all(abs(shares[c] - 7 * n / 100) < 1 for c, n in ((0, 50), (1, 30), (2, 20)))
    assert _subset(ds, 100) is ds and _subset(ds, None) is ds


def test_yinyang_limit_eval_covers_every_class():
    from collections import Counter

    from spikescan.runtime.data import get_dataset
    from spikescan.runtime.train import _subset

    ds = get_dataset("yinyang", "test")
    sub = _subset(ds, 30, seed=0)
    counts = Counter(int(ds.labels[i]) for i in sub.indices)
    full = Counter(int(y) for y in ds.labels)
    assert set(counts) == set(full) and all(abs(counts[c] - 30 * full[c] / len(ds)) < 1 for c in full)


def test_limit_options_document_the_subset():
    import argparse

    from spikescan.runtime import cli_eval, cli_train

    for mod, opts in ((cli_train, ("--limit-train", "--limit-eval")), (cli_eval, ("--limit",))):
        p = argparse.ArgumentParser()
        mod.add_arguments(p)
        for a in p._actions:
            if set(a.option_strings) & set(opts):
                assert "seeded" in a.help and "stratified" in a.help, a.help
