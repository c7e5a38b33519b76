"""DeepSpeed ZeRO-3 over two CPU processes (gloo, `configs/accelerate/zero3-cpu2.yaml`): parameters are really partitioned (the
policy and the reference model), DRPO sees one global batch and holds one state on both ranks, DeepSpeed's engine checkpoints are
complete and pass the pickle scan, and a run killed after a checkpoint and resumed through `scripts/train.sh zero3-cpu2 ...
resume=true` ends where an uninterrupted run ends. The tiny model, a few steps. The launch, the DRPO checks and the kill-and-resume
run are shared with the FSDP test (tests/runs.py). Skipped where DeepSpeed is not installed (`.ci/run` installs it after the main
suite and runs this file; see README, "Multi-GPU engines")."""
import os

import pytest

try: import deepspeed  # noqa: F401
except ImportError:   # .ci/run installs DeepSpeed after the main suite and sets QOQMED_REQUIRE_DEEPSPEED: there this must run, not skip
    if os.environ.get("QOQMED_REQUIRE_DEEPSPEED"): raise
    pytest.skip("DeepSpeed not installed (pip install --no-build-isolation deepspeed==0.19.8: from source, without CUDA)", allow_module_level=True)

from runs import check_drpo_one_global_batch, check_engine_checkpoint, check_kill_and_resume, launch_two_steps

# What each rank records about the policy and the reference: every parameter partitioned or not, its local partition and full sizes.
RECORD = r'''
sizes = lambda m: {n: dict(zero3=hasattr(p, "ds_numel"), local=p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel(),
                           full=p.ds_numel if hasattr(p, "ds_numel") else p.numel()) for n, p in m.named_parameters()}
record(zero_stage=acc.state.deepspeed_plugin.zero_stage, wrapped=type(trainer.model_wrapped).__name__, params=sizes(trainer.model),
       ref=type(trainer.ref_model).__name__, ref_params=sizes(trainer.ref_model))
'''


def test_zero3_cpu2_partitions_and_drpo_matches_one_process(tmp_path):
    _, a, b = launch_two_steps("zero3-cpu2", RECORD, tmp_path, port=29551)
    # ZeRO-3, not DDP: every parameter of the policy and of the reference partitioned, each rank holding half of each
    assert a["distributed"] == b["distributed"] == "DistributedType.DEEPSPEED" and (a["world"], a["zero_stage"]) == (2, 3)
    assert a["wrapped"] == a["ref"] == "DeepSpeedEngine"
    for key in ("params", "ref_params"):
        assert all(p["zero3"] for p in a[key].values()) and a[key].keys() == b[key].keys(), key
        full = sum(p["full"] for p in a[key].values())
        local = [sum(p["local"] for p in x[key].values()) for x in (a, b)]
        assert full <= sum(local) <= full + 2 * len(a[key]) and all(abs(n - full / 2) <= 0.01 * full for n in local), (key, local, full)
    # DRPO: one global batch, one state on both ranks, the advantages one process computes
    check_drpo_one_global_batch(a, b)
    # a complete checkpoint with DeepSpeed's engine files and the DRPO state, safe to load; gathered full weights in final/
    engine = [f"global_step2/zero_pp_rank_{r}_mp_rank_00_{k}_states.pt" for r in (0, 1) for k in ("model", "optim")]
    check_engine_checkpoint(tmp_path / "run", ["latest", "model.safetensors", *engine], sum(p["full"] for p in a["params"].values()))
    # the scan's DeepSpeed allowance is what lets the engine's optimizer file through: it pickles DeepSpeed's own classes
    from qoqmed.train import unsafe_globals
    optim = tmp_path / "run" / "checkpoint-2" / engine[1]
    assert any(n.startswith("deepspeed.") for n in unsafe_globals(optim)) and unsafe_globals(optim, engine=True) == []


def test_zero3_cpu2_kill_and_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    final_ckpt = check_kill_and_resume("zero3-cpu2", tmp_path, steps=3, ports=(29552, 29553, 29554))
    assert (final_ckpt / "global_step3").is_dir()
