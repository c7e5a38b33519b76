"""The trainer-level DRPO benchmark still runs: `bench/drpo_trainer.py --quick` writes the synthetic 4-domain task (text, PNG and ECG
cues), warm-starts the tiny QoQ-Med, trains it 2 steps with each of grpo, drpo_domain_only and drpo through `QoQMedGRPOTrainer`,
evaluates the held-out set and prints the report tables (under a minute on 2 cores; no timing or learning is asserted)."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_drpo_trainer_bench_quick(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "drpo_trainer.py"), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    s = out.stdout
    assert "seed 0: warm start 4 steps" in s
    for algo in ("grpo", "drpo_domain_only", "drpo"): assert f"seed 0 {algo}" in s and f"| {algo} |" in s
    assert "### held-out macro-F1 after 2 RL steps" in s and "| warm start (step 0) |" in s
    assert "| drpo − grpo |" in s and "wall time per RL run:" in s
    assert "| ehr (60%) | chest_xray (25%) | ecg (10%) | dermoscopy (5%) | mean over domains |" in s
    assert (tmp_path / "drpo_trainer.png").stat().st_size > 10_000 and (tmp_path / "drpo_trainer.json").is_file()
