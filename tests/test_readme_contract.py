"""The README's two commands are the project's contract; CI must run the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    test_cmds = [b for b in blocks if "pytest" in b]
    assert len(test_cmds) == 1, "README must state exactly one test command"
    assert test_cmds[0] in (ROOT / ".ci" / "run").read_text()


def test_readme_main_job_trains_yinyang():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert any("spikescan train models/yinyang.snn --data yinyang" in b for b in blocks)
    assert (ROOT / "models" / "yinyang.snn").exists()


def test_readme_python_example_prints_what_it_says(capsys, monkeypatch):
    """The README's simulate example runs from the repo root and prints the spike times its
    comment states (to the 4 decimals shown)."""
    monkeypatch.chdir(ROOT)
    text = (ROOT / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    claimed = re.search(r"# tensor\(\[\[(.*?)\]\]\)", code).group(1)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    got = [float(v) for v in re.search(r"tensor\(\[\[(.*?)\]\]", printed).group(1).split(",")]
    want = [float(v) for v in claimed.split(",")]
    assert got == want
