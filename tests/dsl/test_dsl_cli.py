"""`spikescan check`: exit codes, ok lines and diagnostics on stderr."""

import subprocess
import sys
from pathlib import Path

from spikescan.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIX = Path(__file__).parent / "fixtures"


def test_check_all_models_ok(capsys):
    paths = sorted(str(p) for p in (ROOT / "models").glob("*.snn"))
    assert main(["check", *paths]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"ok: {ROOT / 'models' / 'cuba_lif.snn'} (1 neuron, 0 networks)" in out
    assert f"ok: {ROOT / 'models' / 'yinyang.snn'} (0 neurons, 1 network)" in out
    assert out.count("ok: ") == len(paths)


def test_check_bad_file_exit_1(capsys):
    good, bad = str(ROOT / "models" / "lif.snn"), str(FIX / "E020.snn")
    assert main(["check", good, bad]) == 1
    out, err = capsys.readouterr()
    assert "ok: " in out and "E020" not in out
    assert f"{bad}:6:17: error[E020]" in err and "^~~~" in err and "hint:" in err
    assert main(["check", str(FIX / "missing.snn")]) == 1


def test_cli_subprocess_exit_codes():
    r = subprocess.run([sys.executable, "-m", "spikescan.cli", "check", str(FIX / "E001.snn")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "error[E001]" in r.stderr and "Traceback" not in r.stderr
