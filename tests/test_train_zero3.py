"""DeepSpeed ZeRO-3 over two CPU processes (gloo, `configs/accelerate/zero3-cpu2.yaml`): parameters are really partitioned (the
policy and the reference model), DRPO sees one global batch and holds one state on both ranks, DeepSpeed's engine checkpoints are
complete and pass the pickle scan, and a run killed after a checkpoint and resumed through `scripts/train.sh zero3-cpu2 ...
resume=true` ends where an uninterrupted run ends. The tiny model, a few steps. Skipped where DeepSpeed is not installed
(`.ci/run` installs it after the main suite and runs this file; see README, "Multi-GPU engines")."""
import dataclasses, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
ZERO3_CPU2 = ROOT / "configs" / "accelerate" / "zero3-cpu2.yaml"
try: import deepspeed  # noqa: F401
except ImportError:   # .ci/run installs DeepSpeed after the main suite and sets QOQMED_REQUIRE_DEEPSPEED: there this must run, not skip
    if os.environ.get("QOQMED_REQUIRE_DEEPSPEED"): raise
    pytest.skip("DeepSpeed not installed (pip install --no-build-isolation deepspeed==0.19.8: from source, without CUDA)", allow_module_level=True)


ACCELERATE = [sys.executable, "-m", "accelerate.commands.accelerate_cli"]   # the accelerate of the Python that has DeepSpeed


def _env(port, tmp_path):
    "The launch environment, with an `accelerate` first on PATH that is this Python's (scripts/train.sh calls `accelerate`)."
    bin_dir = tmp_path / "bin"; bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "accelerate"
    wrapper.write_text(f'#!/usr/bin/env bash\nexec {sys.executable} -m accelerate.commands.accelerate_cli "$@"\n'); wrapper.chmod(0o755)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
            "MASTER_PORT": str(port), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


# Each rank records its parameters (partitioned or not, local partition and full sizes), the reference model's, every DRPO call
# (inputs, output) and the final DRPO state; the global batch is 2 questions x 4 rollouts (4 per rank).
SCRIPT = r'''
import dataclasses, sys, torch
from pathlib import Path
import qoqmed.drpo as D
from qoqmed.train import train_from_config
out = Path(sys.argv[1])
calls = []
_call = D.DRPOAdvantage.__call__
def spy(self, rewards, groups, domains, kl=None, **kw):
    result = _call(self, rewards, groups, domains, kl=kl, **kw)
    adv = result[0] if isinstance(result, tuple) else result
    calls.append(dict(rewards=rewards.clone(), groups=groups.clone(), domains=list(domains), kl=None if kl is None else kl.clone(),
                      advantages=adv.clone()))
    return result
D.DRPOAdvantage.__call__ = spy
trainer = train_from_config(sys.argv[2], [f"training.output_dir={out}", "training.max_steps=2", "training.per_device_train_batch_size=4",
                                          "training.save_steps=2", "data.check=none", "training.disable_tqdm=true"])
acc = trainer.accelerator
sizes = lambda m: {n: dict(zero3=hasattr(p, "ds_numel"), local=p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel(),
                           full=p.ds_numel if hasattr(p, "ds_numel") else p.numel()) for n, p in m.named_parameters()}
torch.save(dict(distributed=str(acc.distributed_type), world=acc.num_processes, zero_stage=acc.state.deepspeed_plugin.zero_stage,
                wrapped=type(trainer.model_wrapped).__name__, params=sizes(trainer.model), ref=type(trainer.ref_model).__name__,
                ref_params=sizes(trainer.ref_model), calls=calls, state=trainer.drpo.state_dict(),
                config=dataclasses.asdict(trainer.drpo.config)),
           out / f"rank{acc.process_index}.pt")
acc.wait_for_everyone(); acc.end_training()
'''


def test_zero3_cpu2_partitions_and_drpo_matches_one_process(tmp_path):
    script = tmp_path / "zero3.py"; script.write_text(SCRIPT)
    out = tmp_path / "run"; out.mkdir()
    cmd = [*ACCELERATE, "launch", "--config_file", str(ZERO3_CPU2), "--main_process_port", "29551", str(script), str(out), str(DEMO)]
    r = subprocess.run(cmd, env=_env(29551, tmp_path), capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    a, b = (torch.load(out / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    # ZeRO-3, not DDP: every parameter of the policy and of the reference partitioned, each rank holding half of each
    assert a["distributed"] == b["distributed"] == "DistributedType.DEEPSPEED" and (a["world"], a["zero_stage"]) == (2, 3)
    assert a["wrapped"] == a["ref"] == "DeepSpeedEngine"
    for key in ("params", "ref_params"):
        assert all(p["zero3"] for p in a[key].values()) and a[key].keys() == b[key].keys(), key
        full = sum(p["full"] for p in a[key].values())
        local = [sum(p["local"] for p in x[key].values()) for x in (a, b)]
        assert full <= sum(local) <= full + 2 * len(a[key]) and all(abs(n - full / 2) <= 0.01 * full for n in local), (key, local, full)
    # DRPO: the same global batch, the same advantages and the same state on both ranks ...
    assert len(a["calls"]) == len(b["calls"]) == 2
    for x, y in zip(a["calls"], b["calls"]):
        assert x["rewards"].shape == (8,) and torch.equal(x["rewards"], y["rewards"]) and x["domains"] == y["domains"]
        assert torch.equal(x["advantages"], y["advantages"]) and torch.equal(x["kl"], y["kl"])
    sa, sb = a["state"], b["state"]
    assert sa["steps"] == sb["steps"] == 2 and sa["domains"].keys() == sb["domains"].keys()
    for d in sa["domains"]:
        assert (sa["domains"][d]["questions"], sa["domains"][d]["rollouts"]) == (sb["domains"][d]["questions"], sb["domains"][d]["rollouts"])
        assert sa["domains"][d]["reward_sum"] == sb["domains"][d]["reward_sum"] and torch.equal(sa["domains"][d]["features"], sb["domains"][d]["features"])
    assert a["calls"][0]["kl"] is not None   # beta > 0: the damping used the partitioned reference and policy
    # ... and the advantages one process computes from the same batches, starting from scratch
    from qoqmed.drpo import DRPOAdvantage, DRPOConfig
    one = DRPOAdvantage(DRPOConfig(**a["config"]))
    for call in a["calls"]:
        adv = one(call["rewards"], call["groups"], call["domains"], kl=call["kl"])
        adv = adv[0] if isinstance(adv, tuple) else adv
        torch.testing.assert_close(adv, call["advantages"], rtol=0, atol=0)
    # a complete checkpoint with DeepSpeed's engine files and the DRPO state, safe to load; gathered full weights in final/
    from qoqmed.train import COMPLETE_MARKER, checkpoint_problems, check_checkpoint_safe, unsafe_globals
    ckpt = out / "checkpoint-2"
    files = json.loads((ckpt / COMPLETE_MARKER).read_text())["files"]
    engine = [f"global_step2/zero_pp_rank_{r}_mp_rank_00_{k}_states.pt" for r in (0, 1) for k in ("model", "optim")]
    for f in ["drpo_state.pt", "generation_cycle_rank0.pt", "generation_cycle_rank1.pt", "latest", "model.safetensors", *engine]:
        assert f in files, (f, sorted(files))
    assert checkpoint_problems(ckpt) == [] and check_checkpoint_safe(ckpt) is None
    # the scan's DeepSpeed allowance is what lets the engine's optimizer file through: it pickles DeepSpeed's own classes
    optim = ckpt / engine[1]
    assert any(n.startswith("deepspeed.") for n in unsafe_globals(optim)) and unsafe_globals(optim, engine=True) == []
    assert torch.load(ckpt / "drpo_state.pt", weights_only=True)["steps"] == 2
    from qoqmed.model import tiny_qoqmed
    from qoqmed.train import load_checkpoint_weights
    fresh, _ = tiny_qoqmed(seed=0)
    load_checkpoint_weights(fresh, out / "final")   # raises on any missing or unexpected weight
    assert sum(p.numel() for p in fresh.parameters()) == sum(p["full"] for p in a["params"].values())


def _train_sh(out, steps, *extra, port, tmp_path):
    "`scripts/train.sh zero3-cpu2 configs/demo.yaml` as a user runs it (2 x 4 rollouts per step, a checkpoint after every step)."
    cmd = ["bash", str(ROOT / "scripts" / "train.sh"), "zero3-cpu2", str(DEMO), f"training.output_dir={out}", f"training.max_steps={steps}",
           "training.per_device_train_batch_size=4", "training.save_steps=1", "training.save_total_limit=3", "data.check=none",
           "training.disable_tqdm=true", *extra]
    return subprocess.Popen(cmd, env=_env(port, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)


def _steps(trace):
    "{step: [sample ids]} of a completions trace, every row kept."
    out = {}
    for line in Path(trace).read_text().splitlines(): r = json.loads(line); out.setdefault(r["step"], []).append(r["id"])
    return out


def test_zero3_cpu2_kill_and_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    from qoqmed.train import COMPLETE_MARKER, DRPO_STATE_NAME, last_complete_checkpoint
    steps = 3
    ref = tmp_path / "ref"
    proc = _train_sh(ref, steps, port=29552, tmp_path=tmp_path)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-4000:]

    out = tmp_path / "run"
    proc = _train_sh(out, steps, port=29553, tmp_path=tmp_path)
    deadline = time.time() + 600
    try:   # kill every process of the launch (accelerate, torchrun, both ranks) once checkpoint-1 is complete
        while time.time() < deadline and proc.poll() is None and not (out / "checkpoint-1" / COMPLETE_MARKER).is_file(): time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    done = Path(last_complete_checkpoint(out)).name
    assert done in ("checkpoint-1", "checkpoint-2") and not (out / "final").exists(), done

    proc = _train_sh(out, steps, "resume=true", port=29554, tmp_path=tmp_path)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-4000:]
    assert "resuming from" in log and done in log
    final_ckpt = Path(last_complete_checkpoint(out))
    assert final_ckpt.name == f"checkpoint-{steps}" and (final_ckpt / f"global_step{steps}").is_dir()
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
    # the weights, within float tolerance (gathered from the partitions into final/ by DeepSpeed's 16-bit-model save)
    from safetensors.torch import load_file
    wa, wb = load_file(out / "final" / "model.safetensors"), load_file(ref / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and len(wa) > 0
    for k in wa: torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)
