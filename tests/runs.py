"""Helpers for the tests that run `qoqmed` as a user does (a real process), optionally killed at a chosen moment."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"

# `qoqmed ARGS`, optionally killed with SIGKILL at the moment checkpoint-N's completion marker would be written: after
# transformers wrote the weights, optimizer and trainer state (and, before qoqmed prunes after the marker, after transformers
# had rotated old checkpoints away).
DRIVER = r"""
import os, signal, sys
import qoqmed.trainer as T   # the module that defines atomic_write_text: _save_checkpoint looks it up there
kill_at = int(os.environ.get("QOQMED_TEST_KILL_AT_MARKER", "0"))
if kill_at:
    _write = T.atomic_write_text
    def write(path, text):
        if path.name == T.COMPLETE_MARKER and path.parent.name == f"checkpoint-{kill_at}": os.kill(os.getpid(), signal.SIGKILL)
        return _write(path, text)
    T.atomic_write_text = write
from qoqmed.cli import main
sys.exit(main(sys.argv[1:]))
"""


def qoqmed(*args, kill_at=0, timeout=600):
    "Run `qoqmed ARGS` in a new process (killed at checkpoint-`kill_at`'s marker if given); the CompletedProcess."
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "QOQMED_TEST_KILL_AT_MARKER": str(kill_at)}
    return subprocess.run([sys.executable, "-c", DRIVER, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def train(out, steps, *extra, kill_at=0, limit=1, config=DEMO_CONFIG):
    "`qoqmed train` of a config (the demo's by default) with a checkpoint after every step."
    return qoqmed("train", "--config", config, f"training.output_dir={out}", f"training.max_steps={steps}", "training.save_steps=1",
                  f"training.save_total_limit={limit}", "data.check=none", "training.disable_tqdm=true", *extra, kill_at=kill_at)


def rows(path):
    "The rows of a JSONL file."
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


def steps_of(trace):
    "{step: [sample ids]} of a completions trace, every row kept (a step logged twice shows up as twice the rows)."
    out = {}
    for r in rows(trace): out.setdefault(r["step"], []).append(r["id"])
    return out


# The multi-process engines over two CPU processes (tests/test_train_fsdp.py: FSDP2; tests/test_train_zero3.py: DeepSpeed ZeRO-3).
ACCELERATE = [sys.executable, "-m", "accelerate.commands.accelerate_cli"]   # this Python's accelerate (a venv's PATH may hold another's)


def launch_env(port, tmp_path):
    "A launch's environment: offline, one thread, and an `accelerate` first on PATH that is this Python's (scripts/train.sh calls `accelerate`)."
    bin_dir = Path(tmp_path) / "bin"; bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "accelerate"
    wrapper.write_text(f'#!/usr/bin/env bash\nexec {" ".join(ACCELERATE)} "$@"\n'); wrapper.chmod(0o755)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
            "MASTER_PORT": str(port), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


# Two steps of the demo config (global batch 2 questions x 4 rollouts: 4 per rank) with every DRPO call recorded (inputs, output);
# an engine's test appends what it records about the sharded model and calls `record(**that)`, which writes out/rank{i}.pt.
ENGINE_SCRIPT = r'''
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
def record(**engine):
    torch.save(dict(distributed=str(acc.distributed_type), world=acc.num_processes, calls=calls, state=trainer.drpo.state_dict(),
                    config=dataclasses.asdict(trainer.drpo.config), **engine), out / f"rank{acc.process_index}.pt")
    acc.wait_for_everyone(); acc.end_training()
'''


def launch_two_steps(engine, script_tail, tmp_path, port):
    "Launch ENGINE_SCRIPT + `script_tail` under configs/accelerate/`engine`.yaml; (the finished process, rank 0's record, rank 1's)."
    import torch
    script = Path(tmp_path) / "engine.py"; script.write_text(ENGINE_SCRIPT + script_tail)
    out = Path(tmp_path) / "run"; out.mkdir()
    cmd = [*ACCELERATE, "launch", "--config_file", str(ROOT / "configs" / "accelerate" / f"{engine}.yaml"), "--main_process_port", str(port),
           str(script), str(out), str(DEMO_CONFIG)]
    r = subprocess.run(cmd, env=launch_env(port, tmp_path), capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return (r, *(torch.load(out / f"rank{i}.pt", weights_only=True) for i in (0, 1)))


def check_drpo_one_global_batch(a, b):
    "DRPO saw the same global batch and computed the same advantages and state on both ranks, and one process computes them too."
    import torch
    from qoqmed.drpo import DRPOAdvantage, DRPOConfig
    assert len(a["calls"]) == len(b["calls"]) == 2
    for x, y in zip(a["calls"], b["calls"]):
        assert x["rewards"].shape == (8,) and torch.equal(x["rewards"], y["rewards"]) and x["domains"] == y["domains"]
        assert torch.equal(x["advantages"], y["advantages"])
        assert x["kl"] is not None and y["kl"] is not None and torch.equal(x["kl"], y["kl"])   # beta > 0: the damping used the sharded reference and policy
    sa, sb = a["state"], b["state"]
    assert sa["steps"] == sb["steps"] == 2 and sa["domains"].keys() == sb["domains"].keys()
    for d in sa["domains"]:
        assert (sa["domains"][d]["questions"], sa["domains"][d]["rollouts"]) == (sb["domains"][d]["questions"], sb["domains"][d]["rollouts"])
        assert sa["domains"][d]["reward_sum"] == sb["domains"][d]["reward_sum"] and torch.equal(sa["domains"][d]["features"], sb["domains"][d]["features"])
    one = DRPOAdvantage(DRPOConfig(**a["config"]))   # the same batches, from scratch, in one process
    for call in a["calls"]:
        adv = one(call["rewards"], call["groups"], call["domains"], kl=call["kl"])
        adv = adv[0] if isinstance(adv, tuple) else adv
        torch.testing.assert_close(adv, call["advantages"], rtol=0, atol=0)
    assert one.state_dict()["steps"] == 2


def check_engine_checkpoint(out, engine_files, n_params):
    "run/checkpoint-2 is complete (qoqmed's files and the engine's `engine_files`), safe to load, with the DRPO state; final/ holds all `n_params` weights."
    import torch
    from qoqmed.model import tiny_qoqmed
    from qoqmed.train import COMPLETE_MARKER, checkpoint_problems, check_checkpoint_safe, load_checkpoint_weights
    ckpt = Path(out) / "checkpoint-2"
    files = json.loads((ckpt / COMPLETE_MARKER).read_text())["files"]
    for f in ["drpo_state.pt", "generation_cycle_rank0.pt", "generation_cycle_rank1.pt", *engine_files]:
        assert f in files, (f, sorted(files))
    assert checkpoint_problems(ckpt) == [] and check_checkpoint_safe(ckpt) is None
    assert torch.load(ckpt / "drpo_state.pt", weights_only=True)["steps"] == 2
    fresh, _ = tiny_qoqmed(seed=0)
    load_checkpoint_weights(fresh, Path(out) / "final")   # raises on any missing or unexpected weight
    assert sum(p.numel() for p in fresh.parameters()) == n_params


def train_sh(engine, out, steps, *extra, port, tmp_path):
    "`scripts/train.sh ENGINE configs/demo.yaml` as a user runs it (2 x 4 rollouts per step, a checkpoint after every step), started."
    cmd = ["bash", str(ROOT / "scripts" / "train.sh"), engine, str(DEMO_CONFIG), f"training.output_dir={out}", f"training.max_steps={steps}",
           "training.per_device_train_batch_size=4", "training.save_steps=1", "training.save_total_limit=3", "data.check=none",
           "training.disable_tqdm=true", *extra]
    return subprocess.Popen(cmd, env=launch_env(port, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            start_new_session=True)


def check_kill_and_resume(engine, tmp_path, steps, ports):
    """An uninterrupted `steps`-step run, and a run killed (every process of the launch) once checkpoint-1 is complete and resumed with
    `resume=true`: the resumed run trained on the same samples, ends with the same DRPO state exactly and the same final weights
    within float tolerance. The resumed run's last checkpoint."""
    import signal, time, torch
    from safetensors.torch import load_file
    from qoqmed.train import COMPLETE_MARKER, DRPO_STATE_NAME, last_complete_checkpoint
    ref, out = Path(tmp_path) / "ref", Path(tmp_path) / "run"
    proc = train_sh(engine, ref, steps, port=ports[0], tmp_path=tmp_path)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-4000:]

    proc = train_sh(engine, out, steps, port=ports[1], tmp_path=tmp_path)
    deadline = time.time() + 600
    try:   # kill accelerate, torchrun and both ranks once checkpoint-1 is complete
        while time.time() < deadline and proc.poll() is None and not (out / "checkpoint-1" / COMPLETE_MARKER).is_file(): time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    done = Path(last_complete_checkpoint(out)).name
    assert done in ("checkpoint-1", "checkpoint-2") and not (out / "final").exists(), done

    proc = train_sh(engine, out, steps, "resume=true", port=ports[2], tmp_path=tmp_path)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-4000:]
    assert "resuming from" in log and done in log
    final_ckpt = Path(last_complete_checkpoint(out))
    assert final_ckpt.name == f"checkpoint-{steps}"
    assert json.loads((final_ckpt / "trainer_state.json").read_text())["global_step"] == steps
    # the data position: the resumed run trained on the samples the uninterrupted run trained on, each step once
    assert steps_of(out / "completions.jsonl") == steps_of(ref / "completions.jsonl")
    # the DRPO state, exactly
    a = torch.load(final_ckpt / DRPO_STATE_NAME, weights_only=True)
    b = torch.load(Path(last_complete_checkpoint(ref)) / DRPO_STATE_NAME, weights_only=True)
    assert a["steps"] == b["steps"] == steps and a["domains"].keys() == b["domains"].keys()
    for d in a["domains"]:
        x, y = a["domains"][d], b["domains"][d]
        assert (x["questions"], x["rollouts"], x["reward_sum"]) == (y["questions"], y["rollouts"], y["reward_sum"]), d
        assert torch.equal(x["features"], y["features"]), d
    # the weights, within float tolerance (gathered from the shards or partitions into final/)
    wa, wb = load_file(out / "final" / "model.safetensors"), load_file(ref / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and len(wa) > 0
    for k in wa: torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)
    return final_ckpt
