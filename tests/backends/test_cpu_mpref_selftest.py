"""Self-tests of the mpmath reference (tests/mpref.py) against closed forms."""

import mpmath as mp
import pytest

from mpref import HAND_MODELS, mp_simulate, peak_cuba, simulate_model

TOL = mp.mpf("1e-38")


@pytest.fixture(autouse=True)
def _precision():
    with mp.workdps(50):
        yield


def _current_step(tau, theta, bias=0, t_ref=0):
    # v relaxes toward a current i that an input sets (di/dt = 0), plus a constant drive
    return dict(A=[[-1 / mp.mpf(tau), 1 / mp.mpf(tau)], [0, 0]], a0=[mp.mpf(bias) / tau, 0],
                B=[0, 1], c=[1, 0], theta=theta, R=[[0, 0], [0, 1]], r=[0, 0], t_ref=t_ref,
                x0=[0, 0])


def _sim(m, times, weights, **kw):
    return mp_simulate(m["A"], m["a0"], m["B"], m["c"], m["theta"], m["R"], m["r"], m["t_ref"],
                       m["x0"], times, weights, **kw)


def test_step_current_closed_form():
    tau, theta, w, t0 = 20, 1, mp.mpf("1.5"), mp.mpf("2.25")
    s = _sim(_current_step(tau, theta), [t0], [w], t_end=40)
    assert len(s) == 1
    assert abs(s[0] - (t0 + tau * mp.log(w / (w - theta)))) < TOL


def test_periodic_firing_and_refractory():
    tau, theta, bias = 10, 1, mp.mpf(2)
    T = tau * mp.log(bias / (bias - theta))  # period without refractoriness
    s = _sim(_current_step(tau, theta, bias=bias), [], [], t_end=3.5 * T)
    assert len(s) == 3 and all(abs(s[k] - (k + 1) * T) < TOL for k in range(3))
    # refractory longer than T: v is above theta when the threshold comes back
    t_ref = 1.5 * T
    s = _sim(_current_step(tau, theta, bias=bias, t_ref=t_ref), [], [], t_end=T + 2.2 * t_ref)
    assert len(s) == 3 and all(abs(s[k] - (T + k * t_ref)) < TOL for k in range(3))


def test_lif_jump_spikes_at_event_time():
    assert simulate_model("LIF", None, [1.0, 20.0], [0.6, 0.6]) == []
    s = simulate_model("LIF", None, [1.0, 1.5], [0.6, 0.6])
    assert s == [mp.mpf(1.5)]


def test_cuba_quadratic_closed_form():
    # tau_m = 2 tau_s: v = w (q - q^2), q = exp(-t/tau_m)
    w, tm = mp.mpf(5), mp.mpf(20)
    s = simulate_model("CubaLIF", dict(tau_m=20, tau_s=10), [0.0], [w])
    q = (1 + mp.sqrt(1 - 4 / w)) / 2
    assert len(s) == 1 and abs(s[0] + tm * mp.log(q)) < TOL


@pytest.mark.parametrize("eps, spikes", [(mp.mpf("1e-9"), 1), (mp.mpf("-1e-9"), 0)])
def test_equal_time_constants_grazing(eps, spikes):
    tau = mp.mpf(10)
    w = mp.e * (1 + eps)  # peak w/e = theta (1 + eps)
    s = simulate_model("CubaLIF", dict(tau_m=10, tau_s=10), [0.0], [w])
    assert len(s) == spikes
    if spikes:
        t = -tau * mp.lambertw(-1 / w).real  # first crossing, principal branch
        assert abs(s[0] - t) < mp.mpf("1e-30")


def test_peak_helper_and_alpha_adaptive_run():
    tp, v = peak_cuba(3, 20, 5)
    s = simulate_model("CubaLIF", None, [0.0], [3 / v * (1 + mp.mpf("1e-12"))])
    assert len(s) == 1 and abs(s[0] - tp) < 1e-3  # grazing: crossing right next to the peak
    for name in ("AlphaLIF", "AdaptiveLIF"):
        s = simulate_model(name, None, [0.0, 1.0, 2.0], [4.0, 4.0, 4.0])
        assert len(s) >= 1 and all(a < b for a, b in zip(s, s[1:]))
    assert set(HAND_MODELS) == {"LIF", "CubaLIF", "AlphaLIF", "AdaptiveLIF"}
