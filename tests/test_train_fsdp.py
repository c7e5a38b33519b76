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


def _train_sh(out, steps, *extra, port):
    "`scripts/train.sh fsdp-cpu2 configs/demo.yaml` as a user runs it (2 x 4 rollouts per step, a checkpoint after every step)."
    cmd = ["bash", str(ROOT / "scripts" / "train.sh"), "fsdp-cpu2", str(DEMO), f"training.output_dir={out}", f"training.max_steps={steps}",
           "training.per_device_train_batch_size=4", "training.save_steps=1", "training.save_total_limit=3", "data.check=none",
           "training.disable_tqdm=true", *extra]
    return subprocess.Popen(cmd, env=_env(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)


def _steps(trace):
    "{step: [sample ids]} of a completions trace, every row kept."
    out = {}
    for line in Path(trace).read_text().splitlines(): r = json.loads(line); out.setdefault(r["step"], []).append(r["id"])
    return out


def test_fsdp_cpu2_kill_and_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    from qoqmed.train import COMPLETE_MARKER, DRPO_STATE_NAME, last_complete_checkpoint
    steps = 3   # step 3 puts an MRI study on one rank and an ECG on the other: every rank must still run every encoder
    ref = tmp_path / "ref"
    proc = _train_sh(ref, steps, port=29542)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-4000:]

    out = tmp_path / "run"
    proc = _train_sh(out, steps, port=29543)
    deadline = time.time() + 600
    try:   # kill every process of the launch (accelerate, torchrun, both ranks) once checkpoint-1 is complete
        while time.time() < deadline and proc.poll() is None and not (out / "checkpoint-1" / COMPLETE_MARKER).is_file(): time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    done = Path(last_complete_checkpoint(out)).name
    assert done in ("checkpoint-1", "checkpoint-2") and not (out / "final").exists(), done

    proc = _train_sh(out, steps, "resume=true", port=29544)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-4000:]
    assert "resuming from" in log and done in log
    final_ckpt = Path(last_complete_checkpoint(out))
    assert final_ckpt.name == f"checkpoint-{steps}" and (final_ckpt / "pytorch_model_fsdp_0" / ".metadata").is_file()
    assert json.loads((final_ckpt / "trainer_state.json").read_text())["global_step"] == steps
    # the data position: the resumed run trained on the samples the uninterrupted run trained on, each step once
    assert _steps(out / "completions.jsonl") == _steps(ref / "completions.jsonl")
    # the DRPO state, exactly
    a = torch.load(final_ckpt / DRPO_STATE_NAME, weights_only=True)
    b = torch.load(Path(last_complete_checkpoint(ref)) / DRPO_STATE_NAME, weights_only=True)
    assert a["steps"] == b["steps"] == steps and a["domains"].keys() == b["domains"].keys()
    for d in a["domains"]:
        x, y = a["domains"][d], b["domains"][d]
        assert (x["questions"], x["rollouts"], x["reward_sum"]) == (y["questions"], y["rollouts"], y["reward_sum"]), d
        assert torch.equal(x["features"], y["features"]), d
    # the weights, within float tolerance (gathered from the shards into final/)
    from safetensors.torch import load_file
    wa, wb = load_file(out / "final" / "model.safetensors"), load_file(ref / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and len(wa) > 0
    for k in wa: torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)
