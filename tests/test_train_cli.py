"The training entry points parse their arguments and fail clearly on bad input (no training here)."
import subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_train_main_help():
    r = subprocess.run([sys.executable, "-m", "qoqmed.train", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "--config" in r.stdout and "--resume" in r.stdout


def test_train_main_missing_config(tmp_path):
    from qoqmed.train import train_main
    with pytest.raises(FileNotFoundError, match="run config not found"):
        train_main(["--config", str(tmp_path / "nope.yaml")])


def test_bad_override_and_section(tmp_path):
    from qoqmed.train import load_run_config
    cfg = tmp_path / "c.yaml"; cfg.write_text("model: {tiny: true}\ntraining: {algo: drpo}\n")
    with pytest.raises(ValueError, match="expected key=value"): load_run_config(cfg, ["algo"])
    with pytest.raises(ValueError, match="QoQMedGRPOConfig.algo"):
        from qoqmed.train import QoQMedGRPOConfig
        QoQMedGRPOConfig(**{**load_run_config(cfg, ["algo=ppo"])["training"], "output_dir": str(tmp_path), "use_cpu": True})


def test_train_sh_usage():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "train.sh")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr
    r = subprocess.run(["bash", str(ROOT / "scripts" / "train.sh"), "nccl9", str(ROOT / "configs" / "demo.yaml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "zero3, fsdp, cpu2, fsdp-cpu2 or zero3-cpu2" in r.stderr


@pytest.mark.parametrize("name", ["demo", "stage1-7b", "stage2-7b", "stage2-32b", "qlora-7b"])
def test_shipped_configs_parse(name, tmp_path):
    from qoqmed.train import QoQMedGRPOConfig, load_run_config
    cfg = load_run_config(ROOT / "configs" / f"{name}.yaml", [f"output_dir={tmp_path}", "use_cpu=true", "bf16=false"])
    args = QoQMedGRPOConfig(**cfg["training"])
    assert args.algo == "drpo" and args.reward_weights == [0.6, 0.2, 0.2]
    assert bool(cfg.get("qlora")) == (name == "qlora-7b")
    assert (args.stage is None) == (name in ("demo", "qlora-7b"))
