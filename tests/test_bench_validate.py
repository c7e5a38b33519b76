"""The validation benchmark still runs: `bench/validate.py --quick` builds datasets over distinct file copies and prints its
table of records/s (full and fast mode, 1 and 2 workers) and the per-kind costs (no timing is asserted)."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_validate_bench_quick():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "validate.py"), "--quick"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| dataset | records | mode | 1 worker rec/s | 2 workers rec/s |" in out.stdout
    assert out.stdout.count("| full |") == 2 and out.stdout.count("| fast |") == 2
    assert "demo-us-modality" in out.stdout and "2.61 M records" in out.stdout
