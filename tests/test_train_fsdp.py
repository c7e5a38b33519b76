"""FSDP2 over two CPU processes (gloo, `configs/accelerate/fsdp-cpu2.yaml`): the model is really sharded, DRPO sees one global
batch and holds one state on both ranks, checkpoints are sharded and complete, and a run killed after a checkpoint and resumed
through `scripts/train.sh fsdp-cpu2 ... resume=true` ends where an uninterrupted run ends. The tiny model, a few steps."""
import dataclasses, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
FSDP_CPU2 = ROOT / "configs" / "accelerate" / "fsdp-cpu2.yaml"
pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")


def _env(port):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
            "MASTER_PORT": str(port)}


# Each rank records its parameters (DTensor or not, local and global sizes), every DRPO call (inputs, output) and the final
# DRPO state; the global batch is 2 questions x 4 rollouts (per_device_train_batch_size=4 on each of 2 ranks).
SCRIPT = r'''
import dataclasses, sys, torch
from pathlib import Path
from torch.distributed.tensor import DTensor
import qoqmed.drpo as D
from qoqmed.train import train_from_config
out = Path(sys.argv[1])
calls = []
_call = D.DRPOAdvantage.__call__
def spy(self, rewards, groups, domains, kl=None, **kw):
    before = self.state_dict()
    result = _call(self, rewards, groups, domains, kl=kl, **kw)
    adv = result[0] if isinstance(result, tuple) else result
    calls.append(dict(rewards=rewards.clone(), groups=groups.clone(), domains=list(domains), kl=None if kl is None else kl.clone(),
                      advantages=adv.clone(), state_before=before))
    return result
D.DRPOAdvantage.__call__ = spy
trainer = train_from_config(sys.argv[2], [f"training.output_dir={out}", "training.max_steps=2", "training.per_device_train_batch_size=4",
                                          "training.save_steps=2", "data.check=none", "training.disable_tqdm=true"])
acc = trainer.accelerator
params = {n: dict(dtensor=isinstance(p, DTensor), local=(p.to_local() if isinstance(p, DTensor) else p).numel(), full=p.numel())
          for n, p in trainer.model.named_parameters()}
torch.save(dict(distributed=str(acc.distributed_type), world=acc.num_processes, model=type(trainer.model).__name__, params=params,
                calls=calls, state=trainer.drpo.state_dict(), config=dataclasses.asdict(trainer.drpo.config)),
           out / f"rank{acc.process_index}.pt")
acc.wait_for_everyone(); acc.end_training()
'''


def test_fsdp_cpu2_shards_and_drpo_matches_one_process(tmp_path):
    script = tmp_path / "fsdp2.py"; script.write_text(SCRIPT)
    out = tmp_path / "run"; out.mkdir()
    cmd = ["accelerate", "launch", "--config_file", str(FSDP_CPU2), "--main_process_port", "29541", str(script), str(out), str(DEMO)]
    r = subprocess.run(cmd, env=_env(29541), capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "FSDP (version 2) on 2 gloo CPU processes" in r.stderr
    a, b = (torch.load(out / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    # FSDP2, not DDP: every parameter a DTensor, each rank holding about half of each and exactly half in all
    assert a["distributed"] == b["distributed"] == "DistributedType.FSDP" and a["world"] == 2
    assert a["model"].startswith("FSDP") and "DistributedDataParallel" not in a["model"]
    assert all(p["dtensor"] for p in a["params"].values()) and a["params"].keys() == b["params"].keys()
    full = sum(p["full"] for p in a["params"].values())
    local = [sum(p["local"] for p in x["params"].values()) for x in (a, b)]
    assert sum(local) == full and all(abs(n - full / 2) <= 0.01 * full for n in local), (local, full)
    # DRPO: the same global batch, the same advantages and the same state on both ranks ...
    assert len(a["calls"]) == len(b["calls"]) == 2
    for x, y in zip(a["calls"], b["calls"]):
        assert x["rewards"].shape == (8,) and torch.equal(x["rewards"], y["rewards"]) and x["domains"] == y["domains"]
        assert torch.equal(x["advantages"], y["advantages"])
        assert (x["kl"] is None) == (y["kl"] is None) and (x["kl"] is None or torch.equal(x["kl"], y["kl"]))
    sa, sb = a["state"], b["state"]
    assert sa["steps"] == sb["steps"] == 2 and sa["domains"].keys() == sb["domains"].keys()
    for d in sa["domains"]:
        assert (sa["domains"][d]["questions"], sa["domains"][d]["rollouts"]) == (sb["domains"][d]["questions"], sb["domains"][d]["rollouts"])
        assert sa["domains"][d]["reward_sum"] == sb["domains"][d]["reward_sum"] and torch.equal(sa["domains"][d]["features"], sb["domains"][d]["features"])
    assert a["calls"][0]["kl"] is not None   # beta > 0: the damping used the sharded reference and policy
    # ... and the advantages one process computes from the same batches, starting from scratch
    from qoqmed.drpo import DRPOAdvantage, DRPOConfig
    one = DRPOAdvantage(DRPOConfig(**a["config"]))
    for call in a["calls"]:
        adv = one(call["rewards"], call["groups"], call["domains"], kl=call["kl"])
        adv = adv[0] if isinstance(adv, tuple) else adv
        torch.testing.assert_close(adv, call["advantages"], rtol=0, atol=0)
    assert one.state_dict()["steps"] == 2
    # a complete sharded checkpoint with the DRPO state, and gathered full weights in final/
    from qoqmed.train import COMPLETE_MARKER, checkpoint_problems, check_checkpoint_safe
    ckpt = out / "checkpoint-2"
    files = json.loads((ckpt / COMPLETE_MARKER).read_text())["files"]
    for f in ("drpo_state.pt", "generation_cycle_rank0.pt", "generation_cycle_rank1.pt", "pytorch_model_fsdp_0/.metadata",
              "pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp", "optimizer_0/.metadata"):
        assert f in files, (f, sorted(files))
    assert checkpoint_problems(ckpt) == [] and check_checkpoint_safe(ckpt) is None
    assert torch.load(ckpt / "drpo_state.pt", weights_only=True)["steps"] == 2
    from qoqmed.model import tiny_qoqmed
    from qoqmed.train import load_checkpoint_weights
    fresh, _ = tiny_qoqmed(seed=0)
    load_checkpoint_weights(fresh, out / "final")   # raises on any missing or unexpected weight
    assert sum(p.numel() for p in fresh.parameters()) == full
