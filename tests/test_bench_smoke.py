"""The reward benchmark still runs: `bench/rewards.py --quick` checks that the summed-area-table reward and the
straightforward rasterising one agree on every completion, then times them (a few seconds; no timing is asserted)."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_rewards_bench_quick():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "rewards.py"), "--quick"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "both implementations give the same rewards" in out.stdout
    assert "per question of 8 rollouts" in out.stdout and "targets:" in out.stdout
