"""The media benchmark still runs: `bench/media_step.py --quick` trains the tiny model on the scaled demo data with media decoded
in the main process and in two DataLoader workers, prints both side by side, and checks the two runs gave the same losses
(no timing is asserted: the machine may be shared)."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_media_step_bench_quick():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "media_step.py"), "--quick"], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "main-process media s/step" in out.stdout and "0 -> 2 workers" in out.stdout
    assert "same losses with 0 and 2 workers: True" in out.stdout
