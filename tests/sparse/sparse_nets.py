"""Small sparse networks written for the tests (the model files of models/ are examples; these are
fixed here so that retuning an example never changes what the tests check)."""

from pathlib import Path

LIF = """
neuron DrivenLIF {
    params { tau_m = 10 ms  mu = 4.0  v_th = 1.0  v_reset = 0.0 }
    state { v = 0.0 }
    dynamics { dv/dt = (mu - v) / tau_m }
    on input(w) { v += w }
    spike when v >= v_th
    on spike { v = v_reset }
    refractory 2 ms
}
"""

CUBA = """
neuron DrivenCubaLIF {
    params { tau_m = 10 ms  tau_s = 2 ms  mu = 4.0  v_th = 1.0  v_reset = 0.0 }
    state { v = 0.0  i = 0.0 }
    dynamics { dv/dt = (mu + i - v) / tau_m
               di/dt = -i / tau_s }
    on input(w) { i += w }
    spike when v >= v_th
    on spike { v = v_reset }
    refractory 2 ms
}
"""


def network(neuron_text: str, n_e: int, n_i: int, k: int, J: float, g: float = 16.0,
            name: str = "net", extra: str = "", init: str = "uniform(0, 1)") -> str:
    neuron = neuron_text.split("neuron ")[1].split()[0]
    ke, ki = max(1, round(0.8 * k)), max(1, round(0.2 * k))
    body = []
    for li, (layer, size) in enumerate((("E", n_e), ("I", n_i))):
        body.append(f"    layer {layer}[{size}] = {neuron}({extra})\n"
                    f"        <- sparse(E, k = {ke}, init = constant(J / sqrt(K)), seed = {2 * li + 1}),\n"
                    f"           sparse(I, k = {ki}, init = constant(-g * J / sqrt(K)), seed = {2 * li + 2})\n"
                    f"        {{ init v = {init} }}")
    return (neuron_text + f"\nnetwork {name} {{\n    param K = {k}\n    param J = {J}\n    param g = {g}\n"
            + "\n".join(body) + "\n}\n")


def write(tmp_path: Path, text: str, name: str = "net.snn") -> Path:
    p = Path(tmp_path) / name
    p.write_text(text)
    return p
