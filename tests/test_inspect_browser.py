"""The exported trace page in a real browser: headless Chromium renders it; we check the DOM and the pixels.

Skipped when no Chromium is installed (Debian: `apt-get install chromium`). Run: `pytest tests/test_inspect_browser.py -v`.
"""
import os, shutil, subprocess, tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable") if shutil.which(n)), None)
if CHROMIUM is None and os.environ.get("QOQMED_REQUIRE_BROWSER"):   # CI sets it: there the browser tests must run
    raise RuntimeError("QOQMED_REQUIRE_BROWSER is set but no Chromium is on PATH; install it (Debian: apt-get install chromium)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH, so the browser tests are skipped; to run them, "
                                "install it (Debian/Ubuntu: `sudo apt-get install chromium`) and rerun pytest")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars", "--force-device-scale-factor=1"]


def _chromium(args, profile, timeout=120):
    "Run headless Chromium with a throwaway profile; return stdout."
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return out.stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from qoqmed.evaluate import example_traces
    from qoqmed.inspect import export_html
    d = tmp_path_factory.mktemp("page")
    keep = ["demo-fundus-normal", "demo-ecg-ptb-mi", "demo-pathology-stain", "demo-us-modality"]   # box truth, ECG, mask, cine loop
    traces = sorted((t for t in example_traces() if t["id"] in keep), key=lambda t: keep.index(t["id"]))
    broken = {**traces[0], "id": "missing-image", "inputs": {**traces[0]["inputs"], "images": ["/nowhere/study.png"]}}
    path = export_html(traces + [broken], d/"traces.html")
    return path, traces


def test_dom(page, tmp_path):
    "After Chromium parsed and ran the page: every trace section, inline images, ECG, boxes legend, highlighted text."
    path, traces = page
    dom = _chromium(["--dump-dom", path.as_uri()], tmp_path/"profile")
    assert dom.count('<section class="trace qoqmed-trace"') == len(traces) + 1
    assert dom.count('src="data:image/png;base64,') >= 3
    assert 'class="ecg-plot"' in dom and 'class="study-image' in dom
    assert 'class="json-block"' in dom and 'class="boxed-answer"' in dom and 'class="reward-bar"' in dom
    assert "predicted box" in dom and "cannot be shown" in dom          # the legend, and the note about the missing image
    assert "file://" not in dom.split("<body", 1)[1]                    # self-contained: nothing loaded from disk


def test_screenshot(page, tmp_path):
    "The rendered page shows orange predicted boxes, green truth, ECG paper and dark text."
    path, _ = page
    shot = tmp_path/"shot.png"
    _chromium([f"--screenshot={shot}", "--window-size=1280,3200", path.as_uri()], tmp_path/"profile")
    assert shot.is_file(), "chromium wrote no screenshot"
    if os.environ.get("QOQMED_KEEP_SCREENSHOT"): shutil.copy(shot, os.environ["QOQMED_KEEP_SCREENSHOT"])
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    near = lambda rgb, tol=12: (np.abs(px - np.array(rgb)).max(axis=-1) <= tol).sum()
    assert near((255, 140, 0)) > 200, "no predicted-box orange on the page"
    assert near((0, 200, 80)) > 200, "no ground-truth green on the page"
    assert near((0xf6, 0xc6, 0xc6), 6) + near((0xe5, 0x8f, 0x8f), 6) > 2000, "no ECG grid paper on the page"
    assert (px.max(axis=-1) < 60).sum() > 2000, "hardly any dark text or traces on the page"
