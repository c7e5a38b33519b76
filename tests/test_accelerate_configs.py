"The shipped accelerate configs parse with accelerate's own loader; fsdp-cpu2.yaml and zero3-cpu2.yaml are fsdp.yaml's FSDP2 and zero3.yaml's ZeRO-3 over two CPU processes."
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACC = ROOT / "configs" / "accelerate"


@pytest.mark.parametrize("name", ["cpu2", "fsdp", "fsdp-cpu2", "zero3", "zero3-cpu2"])
def test_accelerate_config_parses(name):
    from accelerate.commands.config.config_args import ClusterConfig
    cfg = ClusterConfig.from_yaml_file(ACC / f"{name}.yaml")
    assert str(cfg.distributed_type).endswith({"cpu2": "MULTI_GPU", "fsdp": "FSDP", "fsdp-cpu2": "FSDP", "zero3": "DEEPSPEED", "zero3-cpu2": "DEEPSPEED"}[name])
    if name.startswith("zero3"): assert cfg.deepspeed_config["zero_stage"] == 3   # DeepSpeed itself is not needed to read it


def test_fsdp_cpu2_is_fsdp_over_two_cpu_processes():
    from accelerate.commands.config.config_args import ClusterConfig
    gpu, cpu = (ClusterConfig.from_yaml_file(ACC / f"{n}.yaml") for n in ("fsdp", "fsdp-cpu2"))
    assert cpu.fsdp_config == gpu.fsdp_config and cpu.fsdp_config["fsdp_version"] == 2
    assert cpu.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT" and cpu.fsdp_config["fsdp_cpu_ram_efficient_loading"] is True
    assert (cpu.num_processes, str(cpu.mixed_precision), gpu.mixed_precision) == (2, "no", "bf16")


def test_zero3_cpu2_is_zero3_over_two_cpu_processes():
    from accelerate.commands.config.config_args import ClusterConfig
    gpu, cpu = (ClusterConfig.from_yaml_file(ACC / f"{n}.yaml") for n in ("zero3", "zero3-cpu2"))
    assert cpu.deepspeed_config == gpu.deepspeed_config and cpu.deepspeed_config["zero3_init_flag"] is True
    assert (cpu.num_processes, str(cpu.mixed_precision), gpu.mixed_precision) == (2, "no", "bf16")


def _fake_accelerate(tmp_path):
    "A stand-in `accelerate` on PATH that records the arguments scripts/train.sh hands it."
    import os, stat
    bin_dir = tmp_path / "bin"; bin_dir.mkdir()
    fake = bin_dir / "accelerate"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "ARGS_OUT": str(tmp_path / "args.txt")}


@pytest.mark.parametrize("engine", ["zero3", "fsdp"])
def test_train_sh_hands_accelerate_the_config_and_overrides(tmp_path, engine):
    "The GPU launches, checked without GPUs or DeepSpeed: train.sh's arguments reach accelerate, and the run config they name parses."
    import subprocess
    env = {**_fake_accelerate(tmp_path), "GPUS": "8", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"}
    cmd = ["bash", str(ROOT / "scripts" / "train.sh"), engine, str(ROOT / "configs" / "stage2-7b.yaml"), "training.max_steps=3", "resume=true"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert args[:3] == ["launch", "--config_file", str(ACC / f"{engine}.yaml")]
    opt = dict(zip(args[1::2], args[2::2]))
    assert (opt["--num_machines"], opt["--machine_rank"], opt["--num_processes"], opt["--main_process_ip"]) == ("2", "1", "16", "10.0.0.1")
    tail = args[args.index("-m"):]
    assert tail == ["-m", "qoqmed.train", "--config", str(ROOT / "configs" / "stage2-7b.yaml"), "training.max_steps=3", "resume=true"]
    from qoqmed.recipes import load_run_config
    cfg = load_run_config(tail[3], tail[4:])          # what qoqmed.train reads on every rank
    assert cfg["resume"] is True and cfg["training"]["max_steps"] == 3 and "resume" not in cfg["training"]


def test_zero3_launch_reaches_deepspeed_launcher(tmp_path):
    "Without DeepSpeed installed, accelerate reads zero3.yaml and picks its DeepSpeed launcher, which is as far as this machine goes."
    import shutil, subprocess
    if shutil.which("accelerate") is None: pytest.skip("accelerate CLI not installed")
    try:
        import deepspeed  # noqa: F401
        pytest.skip("DeepSpeed is installed: the launch itself is not checked here")
    except ImportError: pass
    cmd = ["accelerate", "launch", "--config_file", str(ACC / "zero3.yaml"), "--num_processes", "1", "-m", "qoqmed.train",
           "--config", str(ROOT / "configs" / "demo.yaml"), "training.max_steps=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "deepspeed_launcher" in r.stderr and "DeepSpeed is not installed" in r.stderr, r.stderr[-2000:]


def test_qlora_refused_under_a_sharding_engine(monkeypatch, capsys):
    "QLoRA is the single-GPU path: under FSDP or DeepSpeed the run is refused before any model or data loads, saying what to do."
    from qoqmed.cli import main
    for var, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False); monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
        monkeypatch.setenv(var, "true")
        assert main(["train", "--config", str(ROOT / "configs" / "qlora-7b.yaml")]) == 2
        err = capsys.readouterr().err
        assert f"qlora: QLoRA is the single-GPU path and is not supported under {name}" in err and "leave out the `qlora:` section" in err, err
