"The repository's promises: README and landing notebook agree, CI runs the README's test command."
import json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def readme_commands():
    block = re.search(r"```bash\n(.*?)```", (ROOT/"README.md").read_text(), re.S).group(1)
    return [l for l in block.splitlines() if l.strip() and not l.lstrip().startswith("#")]

def test_readme_opens_with_two_commands():
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    assert "pip install" in cmds[0] and "qoqmed" in cmds[0].split("&&")[-1]
    assert "pip install" in cmds[1] and "scripts/test.sh" in cmds[1]
    # never let pip pull a CUDA torch on a CPU machine: torch is installed first, pinned to the CPU wheel
    assert all(c.startswith("pip install torch==") for c in cmds)

def test_index_notebook_says_the_same():
    nb = json.loads((ROOT/"nbs"/"index.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    for cmd in readme_commands(): assert cmd in text, cmd

def test_ci_runs_the_readme_test_command():
    ci = (ROOT/".ci"/"run").read_text()
    assert "README.md" in ci and "lines[1]" in ci
    out = subprocess.run([sys.executable, "-c", re.search(r"python3 - <<'PY'\n(.*?)\nPY", ci, re.S).group(1)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert out == readme_commands()[1]

def test_settings_flags_skip_slow_and_gpu():
    ini = (ROOT/"settings.ini").read_text()
    assert re.search(r"^tst_flags\s*=\s*slow gpu\s*$", ini, re.M)

def test_readme_is_the_landing_notebook():
    sys.path.insert(0, str(ROOT/"scripts"))
    from make_readme import readme_text
    assert (ROOT/"README.md").read_text(encoding="utf-8") == readme_text(), "run: python scripts/make_readme.py"
