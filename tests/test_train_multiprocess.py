"Two CPU processes (gloo) under `accelerate launch`: every rank must hold the identical DRPO state and advantages."
import os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, sys, torch
from pathlib import Path
from qoqmed.train import train_from_config
out = Path(sys.argv[1])
seen = []
trainer = None
import qoqmed.train as qt
orig = qt.QoQMedGRPOTrainer._apply_drpo
def spy(self, output, domains):
    adv, stats = orig(self, output, domains)
    seen.append(adv.cpu())
    return adv, stats
qt.QoQMedGRPOTrainer._apply_drpo = spy
trainer = train_from_config(sys.argv[2], [f"training.output_dir={out}", "training.max_steps=2", "training.per_device_train_batch_size=4",
                                          "training.save_strategy=no", "data.check=none", "training.disable_tqdm=true"])
rank = trainer.accelerator.process_index
torch.save(dict(state=trainer.drpo.state_dict(), advantages=seen, world=trainer.accelerator.num_processes,
                distributed=str(trainer.accelerator.distributed_type)), out / f"drpo_rank{rank}.pt")
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()   # destroy the gloo process group before exit
'''


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
def test_two_processes_identical_drpo_state(tmp_path):
    script = tmp_path / "run2.py"; script.write_text(SCRIPT)
    out = tmp_path / "run"; out.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # accelerate 1.15's `--cpu` hands multi-process CPU runs to mpirun; without MPI, `--multi_gpu` starts the two processes
    # through torchrun, and `use_cpu: true` (configs/demo.yaml) makes them gloo CPU processes (DistributedType.MULTI_CPU).
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", "29517", str(script), str(out), str(ROOT / "configs" / "demo.yaml")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    a, b = (torch.load(out / f"drpo_rank{i}.pt", weights_only=True) for i in (0, 1))
    assert a["world"] == b["world"] == 2 and "MULTI_CPU" in a["distributed"]
    assert len(a["advantages"]) == len(b["advantages"]) == 2
    for x, y in zip(a["advantages"], b["advantages"]):
        assert x.shape == (8,) and torch.equal(x, y)   # global batch: 2 questions x 4 rollouts, the same on both ranks
    sa, sb = a["state"], b["state"]
    assert sa["steps"] == sb["steps"] == 2 and sa.keys() == sb.keys() and sa["domains"].keys() == sb["domains"].keys()
    for name in sa["domains"]:
        da, db = sa["domains"][name], sb["domains"][name]
        assert (da["questions"], da["rollouts"], da["reward_sum"]) == (db["questions"], db["rollouts"], db["reward_sum"])
        assert torch.equal(da["features"], db["features"])
    assert sum(d["questions"] for d in sa["domains"].values()) == 4   # 2 steps x 2 questions (one per rank per step)


RESUME_SCRIPT = r'''
import sys, torch
from pathlib import Path
import qoqmed.train as qt, qoqmed.trainer as qtr
out, config, steps, resume = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "resume"
read = []
_load = qtr.safe_torch_load
def spy(path):
    read.append(Path(path).name); return _load(path)
qtr.safe_torch_load = spy   # the trainer's methods look safe_torch_load up in qoqmed.trainer, the module that defines it
trainer = qt.train_from_config(config, [f"training.output_dir={out}", f"training.max_steps={steps}", "training.per_device_train_batch_size=4",
                                        "training.save_steps=1", "data.check=none", "training.disable_tqdm=true"], resume=True if resume else None)
rank = trainer.accelerator.process_index
torch.save(dict(state=trainer.drpo.state_dict(), read=read), out / f"resumed_rank{rank}.pt")
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()
'''


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
def test_two_processes_resume_from_one_drpo_history(tmp_path):
    "A 2-process run resumed: the DRPO state is read on rank 0 only and broadcast, so both ranks continue from one history."
    script = tmp_path / "resume2.py"; script.write_text(RESUME_SCRIPT)
    out = tmp_path / "run"; out.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    def launch(steps, mode):
        cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", "29518", str(script), str(out), str(ROOT / "configs" / "demo.yaml"), str(steps), mode]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    launch(1, "new")
    launch(2, "resume")
    a, b = (torch.load(out / f"resumed_rank{i}.pt", weights_only=True) for i in (0, 1))
    assert "drpo_state.pt" in a["read"] and "drpo_state.pt" not in b["read"]     # one reader, then a broadcast
    assert all(n.startswith("generation_cycle_rank") for n in b["read"])          # each rank reads only its own cycle file
    sa, sb = a["state"], b["state"]
    assert sa["steps"] == sb["steps"] == 2
    for name in sa["domains"]:
        assert sa["domains"][name]["questions"] == sb["domains"][name]["questions"]
        assert torch.equal(sa["domains"][name]["features"], sb["domains"][name]["features"])
