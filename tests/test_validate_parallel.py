"`validate_jsonl` in parallel: the same problems in the same order as serially, and a dying worker is one record's problem."
import json, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
from PIL import Image
from qoqmed.records import validate_jsonl

ROOT = Path(__file__).resolve().parents[1]

def _mixed_file(tmp_path, n=120) -> Path:
    "n records over distinct small images: good ones, a missing file, a box outside, bad JSON, an unknown domain."
    lines = []
    for k in range(n):
        Image.fromarray(np.full((20 + k % 7, 30), k % 255, np.uint8)).save(tmp_path / f"im{k}.png")
        d = dict(problem="<image> Finding?", answer="nodule", images=[f"im{k}.png"], domain="ct")
        if k % 5 == 1: d["images"] = [f"gone{k}.png"]
        if k % 7 == 2: d["bbox"] = [0, 0, 100, 10]
        if k % 11 == 3: d["domain"] = "astrology"
        lines.append("{oops" if k % 13 == 4 else json.dumps(d))
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "t.jsonl"

def test_parallel_equals_serial(tmp_path):
    f = _mixed_file(tmp_path)
    serial = validate_jsonl(f, workers=1)
    assert len(serial) > 40 and [p.line for p in serial] == sorted(p.line for p in serial)
    for workers, chunk in ((2, 3), (2, None), (3, 1)):
        assert validate_jsonl(f, workers=workers, chunk_size=chunk) == serial
    for mode in ("full", "fast"):   # both modes find these (missing files, boxes, fields)
        assert validate_jsonl(f, workers=2, chunk_size=5, mode=mode) == serial

def test_fast_mode_misses_corrupt_pixels(tmp_path):
    "A PNG cut short has a readable header: fast mode passes it, full mode does not (as the docs say)."
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes(); (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "t.jsonl").write_text(json.dumps(dict(problem="<image> q", answer="a", images=["a.png"], domain="ct")) + "\n")
    assert validate_jsonl(tmp_path / "t.jsonl", mode="fast", workers=1) == []
    assert [p.field for p in validate_jsonl(tmp_path / "t.jsonl", workers=2)] == ["images[0]"]

def test_worker_crash_and_loader_bug_are_problems(tmp_path):
    "A loader that kills its process (a segfault, the OOM killer) or raises a non-DataError: one problem each, the rest checked."
    f = _mixed_file(tmp_path, n=40)
    script = textwrap.dedent(f"""
        import os, sys
        import qoqmed.records as r
        serial = r.validate_jsonl({str(f)!r}, workers=1, progress=False)
        real = r.load_image
        def load_image(p):
            if p.endswith("im10.png"): os._exit(9)          # the worker dies
            if p.endswith("im20.png"): raise KeyError("x")  # a loader bug
            return real(p)
        r.load_image = load_image                            # forked workers inherit it
        par = r.validate_jsonl({str(f)!r}, workers=2, chunk_size=4, progress=False)
        for p in par: print(p.line, p.field, p.message[:60], sep="|")
        others = lambda ps: [p for p in ps if p.line not in (11, 21)]
        assert others(par) == [p for p in serial if p.line not in (11, 21)], "the other records changed"
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    rows = [l.split("|") for l in r.stdout.splitlines()]
    assert any(l == "11" and f == "None" and m.startswith("worker process died while checking this record") for l, f, m in rows), r.stdout
    assert any(l == "21" and m.startswith("unexpected KeyError while loading") for l, _, m in rows), r.stdout
