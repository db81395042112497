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
