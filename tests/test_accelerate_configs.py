"The shipped accelerate configs parse with accelerate's own loader, and fsdp-cpu2.yaml is fsdp.yaml's FSDP2 over two CPU processes."
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACC = ROOT / "configs" / "accelerate"


@pytest.mark.parametrize("name", ["cpu2", "fsdp", "fsdp-cpu2", "zero3"])
def test_accelerate_config_parses(name):
    from accelerate.commands.config.config_args import ClusterConfig
    cfg = ClusterConfig.from_yaml_file(ACC / f"{name}.yaml")
    assert str(cfg.distributed_type).endswith({"cpu2": "MULTI_GPU", "fsdp": "FSDP", "fsdp-cpu2": "FSDP", "zero3": "DEEPSPEED"}[name])
    if name == "zero3": assert cfg.deepspeed_config["zero_stage"] == 3   # DeepSpeed itself is not needed to read it


def test_fsdp_cpu2_is_fsdp_over_two_cpu_processes():
    from accelerate.commands.config.config_args import ClusterConfig
    gpu, cpu = (ClusterConfig.from_yaml_file(ACC / f"{n}.yaml") for n in ("fsdp", "fsdp-cpu2"))
    assert cpu.fsdp_config == gpu.fsdp_config and cpu.fsdp_config["fsdp_version"] == 2
    assert cpu.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT" and cpu.fsdp_config["fsdp_cpu_ram_efficient_loading"] is True
    assert (cpu.num_processes, str(cpu.mixed_precision), gpu.mixed_precision) == (2, "no", "bf16")
