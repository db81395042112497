"""Spike caps never truncate silently (runtime/spike_cap.py): samples that hit the networks' cap
are re-run with a larger one and then equal a run with that cap (spikes, readout, gradients);
what stays truncated at --max-spikes is warned about on the console and counted in every
metrics record (epochs, the final test record, eval)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from spikescan.runtime import spike_cap

ROOT = Path(__file__).resolve().parents[2]

# hidden fires 10-12 times, out 27-34 times per Yin-Yang sample (untrained)
BURST = """from "cuba_lif.snn" import CubaLIF

network burst {
    input  x[5]
    layer  hidden[12] = CubaLIF() <- dense(x, init = normal(10.0, 1.0))
    layer  out[3]     = CubaLIF() <- dense(hidden, init = normal(1.0, 0.3))
    readout out: first_spike
}
"""


@pytest.fixture()
def burst(tmp_path):
    shutil.copy(ROOT / "models" / "cuba_lif.snn", tmp_path / "cuba_lif.snn")
    p = tmp_path / "burst.snn"
    p.write_text(BURST)
    return p


def _engine():
    from spikescan.runtime.engines import available

    return "sequential-cpu" if available("sequential-cpu") else "torch"


def _batch(n=8):
    from spikescan.runtime.train_setup import loader, open_dataset, subset

    return next(iter(loader(subset(open_dataset("yinyang", "train", None, {}), n), n, False, 0)))


@pytest.mark.parametrize("engine", [pytest.param("torch", marks=pytest.mark.slow), "sequential-cpu"])
def test_rerun_equals_a_run_with_the_larger_cap(burst, engine):
    from spikescan.runtime.engines import available
    from spikescan.runtime.network import SpikingNetwork

    if not available(engine):
        pytest.skip(f"{engine} not available")
    t, c, _ = _batch()
    small = SpikingNetwork.from_file(burst, engine=engine, seed=0, max_spikes=4)
    big = SpikingNetwork.from_file(burst, engine=engine, seed=0, max_spikes=64)
    assert bool(small(t, c, t_end=60.0).overflow.all())  # the plain run truncates every sample
    stats = spike_cap.CapStats(cap=64)
    got = spike_cap.forward(small, t, c, t_end=60.0, max_spikes=64, stats=stats)
    ref = big(t, c, t_end=60.0)
    assert stats.truncated == 0 and stats.rerun == 8 and small.max_spikes == 4
    assert all(torch.equal(a, b) for a, b in zip(got.counts, ref.counts))
    assert all(torch.equal(a, b) for a, b in zip(got.spikes, ref.spikes))
    assert torch.equal(got.readout, ref.readout) and not bool(got.overflow.any())
    # gradients flow through the re-run samples as through the direct run
    for out, net in ((got, small), (ref, big)):
        s = out.spikes[-1]
        torch.where(torch.isfinite(s), s, torch.zeros_like(s)).sum().backward()
    for (name, p), q in zip(small.named_parameters(), big.parameters()):
        if p.requires_grad:
            assert torch.allclose(p.grad, q.grad, rtol=1e-12, atol=1e-12), name


def test_truncation_at_the_bound_is_counted_by_layer(burst):
    from spikescan.runtime.network import SpikingNetwork

    t, c, _ = _batch()
    net = SpikingNetwork.from_file(burst, engine=_engine(), seed=0, max_spikes=4)
    stats = spike_cap.CapStats(cap=16)
    spike_cap.forward(net, t, c, t_end=60.0, max_spikes=16, stats=stats)
    assert stats.truncated == 8 and stats.n == 8 and stats.layers == {"out"}  # hidden needs 12 <= 16
    msg = stats.warning("test")
    assert "8 of 8 samples" in msg and "layer(s) out" in msg and "--max-spikes" in msg
    assert stats.record() == dict(overflow=8, overflow_layers=["out"], spike_cap=16, spike_cap_reruns=8)


def test_training_warns_and_records_truncation_everywhere(burst, tmp_path, capsys):
    from spikescan.cli import main
    from spikescan.runtime.train import train

    logs = []
    res = train(str(burst), data="yinyang", epochs=1, batch_size=8, limit_train=8, limit_eval=8, progress=False,
                engine=_engine(), out=str(tmp_path / "run"), max_spikes=8, log=logs.append)
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["overflow"] == 16 and lines[0]["overflow_layers"] == ["hidden", "out"]  # train + val
    assert lines[-1]["final"] and lines[-1]["overflow"] == 8 and lines[-1]["spike_cap"] == 8
    assert res.test["overflow"] == 8
    assert any("epoch 1 (train + val): 16 of 16 samples hit the spike cap (8 " in m for m in logs), logs
    assert any(m.startswith("warning: test: 8 of 8 samples") for m in logs), logs
    rc = main(["eval", str(tmp_path / "run" / "best.pt"), "--limit", "8"])
    cap = capsys.readouterr()
    rec = json.loads(cap.out)
    assert rc == 0 and rec["overflow"] == 8 and rec["overflow_layers"] == ["hidden", "out"]
    assert "warning: yinyang test: 8 of 8 samples hit the spike cap" in cap.err
    rc = main(["eval", str(tmp_path / "run" / "best.pt"), "--limit", "8", "--max-spikes", "1024"])
    rec = json.loads(capsys.readouterr().out)
    assert rc == 0 and rec["overflow"] == 0 and rec["spike_cap"] == 1024


def test_default_bound_grows_past_the_networks_cap(burst, tmp_path):
    from spikescan.runtime.train import train

    res = train(str(burst), data="yinyang", epochs=1, batch_size=8, limit_train=8, limit_eval=8, progress=False,
                engine=_engine(), out=str(tmp_path / "run"), net_opts={"max_spikes": 4})
    assert res.history[0]["overflow"] == 0 and res.history[0]["spike_cap_reruns"] == 16
    assert res.test["overflow"] == 0 and res.test["spike_cap"] == spike_cap.DEFAULT_MAX_SPIKES
