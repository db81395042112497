"""Pictures (issue 14 item 3): the state trace marks the exact spike times, the raster draws the
network's own spikes, curves.png has the test point, learning rate and layer rates, and
`spikescan report` writes a page whose confusion matrix reproduces the run's test accuracy.
The figures were opened and looked at when these tests were written; the tests check the
data drawn, not the pixels."""

import json

import pytest
import torch

import spikescan
from repo_paths import repo

YY = repo("models/yinyang.snn")
CUBA = repo("models/cuba_lif.snn")
PNG = b"\x89PNG\r\n\x1a\n"


def _lines(ax, marker):
    return [ln for ln in ax.get_lines() if ln.get_marker() == marker]


def test_trace_marks_the_exact_spike_times():
    times, weights = [1.0, 2.0, 3.0], [5.0, 5.0, 5.0]
    fig = spikescan.plot_trace(CUBA, "CubaLIF", times=times, weights=weights)
    import mpref

    exact = [float(t) for t in mpref.simulate_model("CubaLIF", None, times, weights, dps=30, t_end=100.0)]
    ax_u = fig.axes[0]
    (marks,) = _lines(ax_u, "v")
    spikes = list(marks.get_xdata())
    assert len(exact) == 3 and spikes == pytest.approx(exact, rel=1e-13, abs=1e-12)
    assert all(y == 1.0 for y in marks.get_ydata())  # drawn at the threshold
    curve = ax_u.get_lines()[0]
    u = dict(zip(curve.get_xdata(), curve.get_ydata()))
    assert all(u[s] == 1.0 for s in spikes)  # the left limit at each crossing is the threshold itself
    assert max(curve.get_ydata()) <= 1.0 + 1e-12  # no overshoot drawn past the threshold
    assert "3 spikes" in ax_u.get_title()


def test_raster_draws_the_networks_spikes(tmp_path):
    net = spikescan.Network.from_file(YY, engine="torch", seed=0)
    ds = spikescan.get_dataset("yinyang", "test")
    times, channels, labels = spikescan.pad_collate([ds[5]])
    fig = spikescan.plot_raster(net, times, channels, int(labels[0]), t_end=60.0)
    out = net(times, channels, t_end=60.0)
    hidden_ax = fig.axes[1]
    (pts,) = [ln for ln in hidden_ax.get_lines() if len(ln.get_xdata())]
    s = out.spikes[0][0]
    ok = torch.isfinite(s)
    drawn = sorted(zip(pts.get_xdata().tolist(), pts.get_ydata().tolist()))
    want = sorted(zip(s[ok].tolist(), torch.arange(s.shape[0])[:, None].expand_as(s)[ok].tolist()))
    assert drawn == want and len(want) > 0
    titles = " ".join(a.get_title() for a in fig.axes)
    assert f"label {int(labels[0])}" in titles
    fig.savefig(tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == PNG


def _history():
    return [dict(epoch=e, train_loss=1.0 / e, val_loss=1.1 / e, train_accuracy=0.5 + 0.1 * e, val_accuracy=0.5 + 0.1 * e,
                 lr=1e-2 / e, train_s=1.0, events_per_s=1e4, spikes_per_neuron={"hidden": 0.3 * e, "out": 1.0})
            for e in (1, 2, 3)]


def test_curves_have_test_point_lr_and_rates(tmp_path):
    from spikescan.runtime.plots import curves_figure

    fig = curves_figure(_history(), dict(final=True, test_accuracy=0.77, test_loss=0.4, best_epoch=2))
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["loss", "accuracy", "learning rate", "training spike rates"]
    (star,) = _lines(fig.axes[1], "*")
    assert list(star.get_xdata()) == [2] and list(star.get_ydata()) == [0.77]
    rates = {ln.get_label(): list(ln.get_ydata()) for ln in fig.axes[3].get_lines()}
    assert rates["hidden"] == pytest.approx([0.3, 0.6, 0.9])
    path = spikescan.plot_curves(_history(), tmp_path / "c.png")
    assert path.read_bytes()[:8] == PNG


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    spikescan.train(YY, data="yinyang", epochs=2, batch_size=16, lr=1e-2, limit_train=48, limit_eval=40,
                    engine="torch", out=str(out), progress=False, log=lambda m: None)
    return out


def test_report_confusion_reproduces_the_test_accuracy(run_dir):
    from spikescan.runtime.report import gather

    g = gather(run_dir)
    conf, final = g["confusion"], g["final"]
    assert conf.shape == (3, 4) and int(conf.sum()) == 40
    assert float(conf.diagonal().sum()) / 40 == final["test_accuracy"]
    assert [int(conf[k].sum()) for k in range(3)] == [int(v) for v in
                                                      torch.bincount(torch.tensor(_test_labels(40)), minlength=3)]


def _test_labels(n):
    from spikescan.runtime.train_setup import subset

    ds = subset(spikescan.get_dataset("yinyang", "test"), n, 0)
    return [int(ds[i][2]) for i in range(len(ds))]


def test_report_cli_writes_a_png(run_dir, capsys):
    from spikescan.cli import main

    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run_dir / 'report.png'}"
    assert (run_dir / "report.png").read_bytes()[:8] == PNG
    assert main(["plot", "raster", str(run_dir / "best.pt"), "--sample", "2", "-o", str(run_dir / "r.png")]) == 0
    assert (run_dir / "r.png").read_bytes()[:8] == PNG


def test_report_refuses_damaged_metrics_with_the_line(run_dir, tmp_path, capsys):
    from spikescan.cli import main

    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (bad / "metrics.jsonl").write_text(lines[0] + "\n{not json\n")
    assert main(["report", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "metrics.jsonl:2: not a JSON line" in err and "Traceback" not in err
    rec = json.loads(lines[0])
    rec["train_loss"] = "__import__('os')"
    (bad / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
    assert main(["report", str(bad)]) == 1
    assert "lacks numeric train_loss" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 1
    assert "not a folder" in capsys.readouterr().err


def test_plot_trace_cli(tmp_path, capsys):
    from spikescan.cli import main

    out = tmp_path / "t.png"
    assert main(["plot", "trace", CUBA, "--times", "1,2,3", "--weights", "5,5,5", "--param", "tau_m=10",
                 "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    assert main(["plot", "trace", CUBA, "--times", "1,2", "--weights", "5", "-o", str(out)]) == 1
    assert "--times has 2 values but --weights 1" in capsys.readouterr().err
