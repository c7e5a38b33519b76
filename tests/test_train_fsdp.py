"""FSDP2 over two CPU processes (gloo, `configs/accelerate/fsdp-cpu2.yaml`): the model is really sharded, DRPO sees one global
batch and holds one state on both ranks, checkpoints are sharded and complete, and a run killed after a checkpoint and resumed
through `scripts/train.sh fsdp-cpu2 ... resume=true` ends where an uninterrupted run ends. The tiny model, a few steps. The launch,
the DRPO checks and the kill-and-resume run are shared with the ZeRO-3 test (tests/runs.py)."""
from runs import check_drpo_one_global_batch, check_engine_checkpoint, check_kill_and_resume, launch_two_steps

# What each rank records about the model: every parameter a DTensor or not, its local and global sizes.
RECORD = r'''
from torch.distributed.tensor import DTensor
record(model=type(trainer.model).__name__,
       params={n: dict(dtensor=isinstance(p, DTensor), local=(p.to_local() if isinstance(p, DTensor) else p).numel(), full=p.numel())
               for n, p in trainer.model.named_parameters()})
'''


def test_fsdp_cpu2_shards_and_drpo_matches_one_process(tmp_path):
    r, a, b = launch_two_steps("fsdp-cpu2", RECORD, tmp_path, port=29541)
    assert "FSDP (version 2) on 2 gloo CPU processes" in r.stderr
    # FSDP2, not DDP: every parameter a DTensor, each rank holding about half of each and exactly half in all
    assert a["distributed"] == b["distributed"] == "DistributedType.FSDP" and a["world"] == 2
    assert a["model"].startswith("FSDP") and "DistributedDataParallel" not in a["model"]
    assert all(p["dtensor"] for p in a["params"].values()) and a["params"].keys() == b["params"].keys()
    full = sum(p["full"] for p in a["params"].values())
    local = [sum(p["local"] for p in x["params"].values()) for x in (a, b)]
    assert sum(local) == full and all(abs(n - full / 2) <= 0.01 * full for n in local), (local, full)
    # DRPO: one global batch, one state on both ranks, the advantages one process computes
    check_drpo_one_global_batch(a, b)
    # a complete sharded checkpoint with the DRPO state, and gathered full weights in final/
    check_engine_checkpoint(tmp_path / "run", ["pytorch_model_fsdp_0/.metadata", "pytorch_model_fsdp_0/__0_0.distcp",
                                               "pytorch_model_fsdp_0/__1_0.distcp", "optimizer_0/.metadata"], full)


def test_fsdp_cpu2_kill_and_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    # 3 steps: step 3 puts an MRI study on one rank and an ECG on the other, so every rank must still run every encoder
    final_ckpt = check_kill_and_resume("fsdp-cpu2", tmp_path, steps=3, ports=(29542, 29543, 29544))
    assert (final_ckpt / "pytorch_model_fsdp_0" / ".metadata").is_file()
