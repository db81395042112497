"""`init = auto(rate = ...)` (runtime/auto_init.py, runtime/train_auto.py): the language default
for `dense` without init, the rate reached on a real Yin-Yang batch, determinism, what is left
alone (LI readouts, networks built from Python, resumed runs), and the diagnostics."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import spikescan.dsl as dsl
from spikescan.compiler.driver import load_model
from spikescan.compiler.ir import AUTO_RATE, InitSpec

ROOT = Path(__file__).resolve().parents[2]
T_END = 60.0  # the Yin-Yang trial length (DATASET_DEFAULTS)

AUTO = """from "cuba_lif.snn" import CubaLIF
from "li_readout.snn" import LI

network auto {{
    input  x[5]
    layer  hidden[24] = CubaLIF() <- dense(x{hidden})
    layer  out[3]     = {out}() <- dense(hidden)
    readout out: {readout}
}}
"""


def _model(tmp_path, hidden=", init = auto(rate = 50 Hz)", out="CubaLIF", readout="first_spike"):
    for f in ("cuba_lif.snn", "li_readout.snn"):
        shutil.copy(ROOT / "models" / f, tmp_path / f)
    p = tmp_path / "auto.snn"
    p.write_text(AUTO.format(hidden=hidden, out=out, readout=readout))
    return p


def _batch(n=32):
    from spikescan.runtime.data import get_dataset, pad_collate

    ds = get_dataset("yinyang", "train")
    return pad_collate([ds[i] for i in range(n)])


def _net(path, seed=0):
    from spikescan.runtime.network import SpikingNetwork

    return SpikingNetwork.from_file(path, engine="torch", seed=seed)


def _rates_hz(net, times, channels):
    with torch.no_grad():
        out = net(times, channels, t_end=T_END)
    return {n: float(c.double().mean()) * 1000.0 / T_END for n, c in zip(out.layer_names, out.counts)}


def test_missing_init_of_dense_is_auto_10hz_and_recurrent_keeps_default(tmp_path):
    net = load_model(str(_model(tmp_path, hidden=""))).networks["auto"]
    assert [c.init for l in net.layers for c in l.connections] == [InitSpec("auto", AUTO_RATE)] * 2
    assert AUTO_RATE * 1000 == 10.0
    src = tmp_path / "rec.snn"
    src.write_text('from "cuba_lif.snn" import CubaLIF\nnetwork r { input x[2]\n'
                   '  layer h[3] = CubaLIF() <- dense(x, init = auto(0.05 kHz)), recurrent(h)\n'
                   '  readout h: first_spike }\n')
    (h,) = load_model(str(src)).networks["r"].layers
    assert [c.init for c in h.connections] == [InitSpec("auto", 0.05), InitSpec("default")]


def test_rate_after_auto_init_is_the_target_on_a_real_batch(tmp_path):
    times, channels, _ = _batch()
    net = _net(_model(tmp_path))
    before = _rates_hz(net, times, channels)
    rec = net.auto_init(times, channels, T_END)
    after = _rates_hz(net, times, channels)
    targets = {"hidden": 50.0, "out": 10.0}
    assert [r["layer"] for r in rec["layers"]] == ["hidden", "out"]
    for r in rec["layers"]:
        assert r["converged"] and r["target_hz"] == targets[r["layer"]]
        assert abs(after[r["layer"]] - r["target_hz"]) <= 0.1 * r["target_hz"], (before, after, rec)
        assert math.isclose(after[r["layer"]], r["rate_hz"], rel_tol=1e-12)  # the record is the real rate
        assert r["forwards"] <= 24
    # the default draw (scale 1) is far from the targets here, so the scaling did the work
    assert abs(before["hidden"] - 50.0) > 0.1 * 50.0


def test_auto_init_is_deterministic_and_scales_the_initial_draw(tmp_path):
    times, channels, _ = _batch(16)
    path = _model(tmp_path)
    a, b, plain = _net(path), _net(path), _net(path)
    ra, rb = a.auto_init(times, channels, T_END), b.auto_init(times, channels, T_END)
    assert ra == rb
    for (name, wa), wb, w0 in zip(a.named_parameters(), b.parameters(), plain.parameters()):
        assert torch.equal(wa, wb), name
        scale = next(r["scale"] for r in ra["layers"] if name.startswith(f"layers.{r['layer']}."))
        assert torch.allclose(wa, w0 * scale, rtol=1e-15, atol=0), name  # only the scale is data-dependent


def test_python_network_keeps_the_unscaled_draw_until_auto_init_is_called(tmp_path):
    net = _net(_model(tmp_path, hidden=""))
    gen = torch.Generator().manual_seed(0)  # the network's seed: normal(1/sqrt(fan_in), 1/sqrt(fan_in))
    w_hidden = (torch.randn((5, 24), generator=gen, dtype=torch.float64) + 1.0) / math.sqrt(5)
    w_out = (torch.randn((24, 3), generator=gen, dtype=torch.float64) + 1.0) / math.sqrt(24)
    assert torch.equal(net.layers["hidden"].weights[0].detach(), w_hidden)
    assert torch.equal(net.layers["out"].weights[0].detach(), w_out)


def test_a_second_auto_init_finds_a_factor_near_one(tmp_path):
    times, channels, _ = _batch(16)
    net = _net(_model(tmp_path))
    net.auto_init(times, channels, T_END)
    again = net.auto_init(times, channels, T_END)
    assert all(r["converged"] and r["forwards"] == 1 and r["scale"] == 1.0 for r in again["layers"]), again


def test_li_readout_keeps_its_unscaled_init(tmp_path):
    times, channels, _ = _batch(16)
    net = _net(_model(tmp_path, out="LI", readout="max_potential"))
    w_out = net.layers["out"].weights[0].detach().clone()
    rec = net.auto_init(times, channels, T_END)
    assert rec["layers"][0]["layer"] == "hidden" and rec["layers"][0]["converged"]
    assert rec["layers"][1]["layer"] == "out" and "skipped" in rec["layers"][1]
    assert torch.equal(net.layers["out"].weights[0].detach(), w_out)


def test_layers_of_a_recurrent_group_are_run_jointly_and_left_unscaled(tmp_path):
    shutil.copy(ROOT / "models" / "cuba_lif.snn", tmp_path / "cuba_lif.snn")
    src = tmp_path / "group.snn"
    src.write_text('from "cuba_lif.snn" import CubaLIF\nnetwork g { input x[5]\n'
                   '  layer a[8] = CubaLIF() <- dense(x, init = normal(1.5, 0.8)), recurrent(b, init = normal(0.0, 0.1))\n'
                   '  layer b[8] = CubaLIF() <- dense(a), dense(x, init = normal(1.5, 0.8))\n'
                   '  layer out[3] = CubaLIF() <- dense(b, init = auto(rate = 40 Hz))\n'
                   '  readout out: first_spike }\n')
    times, channels, _ = _batch(16)
    net = _net(src)
    w = net.layers["b"].weights[0].detach().clone()
    rec = net.auto_init(times, channels, T_END)
    assert [(r["layer"], "skipped" in r) for r in rec["layers"]] == [("b", True), ("out", False)]
    assert torch.equal(net.layers["b"].weights[0].detach(), w)
    r = rec["layers"][1]
    assert r["converged"] and abs(_rates_hz(net, times, channels)["out"] - 40.0) <= 4.0


def test_high_target_rates_raise_the_network_spike_cap(tmp_path):
    from spikescan.runtime.auto_init import spike_cap_for

    assert [spike_cap_for(c) for c in (0.0, 0.6, 16.0, 16.1, 30.0, 1e6)] == [1, 4, 64, 128, 128, 4096]
    times, channels, _ = _batch(16)
    net = _net(_model(tmp_path, hidden=", init = auto(rate = 300 Hz)"))  # 18 spikes per neuron in 60 ms
    rec = net.auto_init(times, channels, T_END)
    assert rec["layers"][0]["converged"] and rec["spike_cap"] == net.max_spikes == 128
    low = _net(_model(tmp_path))  # 50 Hz and 10 Hz: 3 and 0.6 spikes, the default cap stays
    assert low.auto_init(times, channels, T_END)["spike_cap"] == low.max_spikes == 64


def test_bad_auto_init_arguments_are_refused(tmp_path):
    times, channels, _ = _batch(4)
    net = _net(_model(tmp_path))
    with pytest.raises(ValueError, match="t_end"):
        net.auto_init(times, channels, 0.0)


@pytest.mark.parametrize("rate, code", [("-5 Hz", "E096"), ("0 Hz", "E096"), ("0.0 kHz", "E096"),
                                        ("2 kHz", "E096"), ("10 ms", "E097"), ("10", "E097")])
def test_bad_rates_are_diagnostics(tmp_path, rate, code):
    p = _model(tmp_path, hidden=f", init = auto(rate = {rate})")
    _, diags = dsl.check_file(p)
    assert [d.code for d in diags] == [code]
    assert diags[0].span.line == 6 and diags[0].hint


def test_auto_on_a_recurrent_connection_is_refused(tmp_path):
    src = tmp_path / "rec.snn"
    shutil.copy(ROOT / "models" / "cuba_lif.snn", tmp_path / "cuba_lif.snn")
    src.write_text('from "cuba_lif.snn" import CubaLIF\nnetwork r { input x[2]\n'
                   '  layer h[3] = CubaLIF() <- dense(x), recurrent(h, init = auto(rate = 5 Hz))\n'
                   '  readout h: first_spike }\n')
    _, diags = dsl.check_file(src)
    assert [d.code for d in diags] == ["E047"] and "feed-forward" in diags[0].message


# ----------------------------------------------------------------------------- training


def _train(path, out, **kw):
    from spikescan.runtime.train import train

    opts = dict(data="yinyang", batch_size=16, lr=1e-2, limit_train=16, limit_eval=16, progress=False, seed=0,
                engine="torch", epochs=1, out=str(out))
    opts.update(kw)
    return train(path if not isinstance(path, Path) else str(path), **opts)


def test_training_scales_once_and_resume_does_not_rescale(tmp_path, monkeypatch):
    from spikescan.runtime import auto_init as auto_mod
    from spikescan.runtime.checkpoint import load_checkpoint

    path = _model(tmp_path, hidden=", init = auto(rate = 300 Hz)")  # raises the spike cap to 128
    said: list[str] = []
    calls = []
    real = auto_mod.auto_init
    monkeypatch.setattr(auto_mod, "auto_init", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = _train(path, tmp_path / "run", log=said.append)
    assert calls == [1]
    assert any(line.startswith("auto init on the first batch (16 samples") for line in said), said
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    rec = ck["auto_init"]
    assert [r["layer"] for r in rec["layers"]] == ["hidden", "out"] and rec["batch"] == 16
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["epoch"] == 1 and first["auto_init"] == rec
    assert res.history[0]["auto_init"] == rec

    assert rec["spike_cap"] == 128 and res.model.max_spikes == 128

    said.clear()
    res2 = _train(path, tmp_path / "run", epochs=2, resume=True, log=said.append)
    assert calls == [1], "a resumed run must not scale again"
    assert any("not redone on resume" in line for line in said), said
    assert load_checkpoint(tmp_path / "run" / "last.pt")["auto_init"] == rec
    assert res2.epochs_run == 1
    assert res2.model.max_spikes == 128  # the cap auto init set is restored on resume


def test_training_a_given_network_does_not_scale_it(tmp_path, monkeypatch):
    from spikescan.runtime import auto_init as auto_mod

    net = _net(_model(tmp_path))
    times, channels, _ = _batch(16)
    net.auto_init(times, channels, T_END)  # the documented call; unscaled, this network is silent
    w = [p.detach().clone() for p in net.parameters()]
    monkeypatch.setattr(auto_mod, "auto_init", lambda *a, **k: pytest.fail("auto_init called"))
    res = _train(net, tmp_path / "run", lr=1e-12)
    assert "auto_init" not in res.history[0]
    assert all(torch.allclose(a, b, rtol=1e-6) for a, b in zip(net.parameters(), w))  # not rescaled
