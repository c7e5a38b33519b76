"A demo training run's rollouts as traces: `load_traces(run_folder)`, `render_trace`, `export_html`, `qoqmed inspect`, and the page in Chromium."
import json, os, shutil, subprocess
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable") if shutil.which(n)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars", "--force-device-scale-factor=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from qoqmed.train import run_demo
    paths = run_demo(tmp_path_factory.mktemp("run") / "demo", steps=2, progress=False)
    return Path(paths["run"])


def test_load_render(run):
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from qoqmed.inspect import load_traces, render_trace, select_traces
    from qoqmed.traces import trace_problems
    traces = load_traces(run)
    rows = [json.loads(l) for l in (run / "completions.jsonl").read_text().splitlines()]
    assert len(traces) == len(rows) == 2 * 8
    assert all(trace_problems(t) == [] for t in traces), [trace_problems(t) for t in traces][:2]
    assert {t["step"] for t in traces} == {1, 2} and {t["rank"] for t in traces} == {0}
    assert all(isinstance(t["advantage"], float) and t["rewards"] for t in traces)
    assert len(select_traces(traces, steps=(2, 2))) == 8
    for t in (traces[0], next(t for t in traces if t["inputs"]["time_series"] or t is traces[-1])):
        fig = render_trace(t); assert fig is not None; plt.close(fig)


def test_cli_export_in_browser(run, tmp_path):
    from qoqmed.cli import main
    out = tmp_path / "run.html"
    assert main(["inspect", str(run), "--html", str(out), "--steps", "1:2"]) == 0
    page = out.read_text()
    assert page.count('class="trace qoqmed-trace"') == 16
    assert 'src=""' not in page and "<img" in page                     # no <img> without data
    assert main(["inspect", str(run), "--html", str(out), "--steps", "9:"]) == 2
    if CHROMIUM is None: pytest.skip("no Chromium on PATH")
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path/'profile'}", "--dump-dom", out.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert dom.count('<section class="trace qoqmed-trace"') == 16
    assert dom.count('src="data:image/png;base64,') >= 8
    import re
    assert not re.search(r'<img(?![^>]*src="data:image/png;base64,)[^>]*>', dom), "an <img> without data (broken image)"
