"""The media memory benchmark still runs: `bench/media_memory.py --quick` measures every sample kind before (revision
6ee5111) and after in fresh subprocesses and prints the table (about 20 s; only the bomb's outcome is asserted, no sizes)."""
import os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_media_memory_bench_quick():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "media_memory.py"), "--quick"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [l for l in out.stdout.splitlines() if l.startswith("| ") and not l.startswith("| sample")]
    assert len(rows) == 8, out.stdout
    assert "crashed" not in out.stdout, out.stdout
    assert "DataError: image of 3000x3000 pixels" in rows[-1]   # the bomb is refused after, decoded before
