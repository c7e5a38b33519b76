"Kill a DRPO training run mid-way (SIGKILL), resume it, and check it continues with the saved DRPO state."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"


def _launch(out, steps, extra=()):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "qoqmed.train", "--config", str(DEMO_CONFIG), f"training.output_dir={out}",
           f"training.max_steps={steps}", "training.save_steps=1", "training.save_total_limit=3", "data.check=none",
           "training.disable_tqdm=true", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def _steps(trace_file):
    "{step: [sample ids]} from a completions trace; a step logged twice (killed, then redone) keeps its last rows."
    rows = [json.loads(l) for l in Path(trace_file).read_text().splitlines()]
    out = {}
    for r in rows: out.setdefault(r["step"], []).append(r["id"])
    return {k: v[-8:] for k, v in out.items()}


def test_kill_and_resume(tmp_path):
    from qoqmed.train import last_complete_checkpoint, COMPLETE_MARKER, DRPO_STATE_NAME
    steps = 6
    out = tmp_path / "run"
    proc = _launch(out, steps=steps)
    deadline = time.time() + 480
    try:   # wait for the second complete checkpoint, then kill the process hard
        while time.time() < deadline and proc.poll() is None:
            if (out / "checkpoint-2" / COMPLETE_MARKER).is_file(): break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()[-3000:]
        assert (out / "checkpoint-2" / COMPLETE_MARKER).is_file(), "no checkpoint-2 within the time limit"
    finally:
        proc.send_signal(signal.SIGKILL); proc.wait()
    ckpt = last_complete_checkpoint(out)
    killed_at = int(ckpt.rsplit("-", 1)[1])
    assert 2 <= killed_at < steps, killed_at
    saved = torch.load(Path(ckpt) / DRPO_STATE_NAME, weights_only=True)
    assert saved["steps"] == killed_at          # one DRPO update per optimizer step so far

    proc = _launch(out, steps=steps, extra=["--resume"])
    log, _ = proc.communicate(timeout=480)
    assert proc.returncode == 0, log[-3000:]
    final = last_complete_checkpoint(out)
    assert int(final.rsplit("-", 1)[1]) == steps
    state = torch.load(Path(final) / DRPO_STATE_NAME, weights_only=True)
    # resumed with the saved history: the DRPO step count and the questions seen continue, they do not restart
    assert state["steps"] == steps
    assert sum(d["questions"] for d in state["domains"].values()) == 2 * steps
    assert json.loads((Path(final) / "trainer_state.json").read_text())["global_step"] == steps
    assert (out / "final" / "config.json").is_file()

    # the same run without the kill: same data position after the resume, same DRPO history, same learning-rate schedule,
    # same optimizer step counts, and (CPU, fixed seeds) the same final weights
    ref = tmp_path / "ref"
    proc = _launch(ref, steps=steps)
    log, _ = proc.communicate(timeout=480)
    assert proc.returncode == 0, log[-3000:]
    resumed_ids, ref_ids = _steps(out / "completions.jsonl"), _steps(ref / "completions.jsonl")
    for step in range(killed_at + 1, steps + 1): assert resumed_ids[step] == ref_ids[step], step
    ref_state = torch.load(Path(last_complete_checkpoint(ref)) / DRPO_STATE_NAME, weights_only=True)
    assert ref_state["domains"].keys() == state["domains"].keys()
    for name, d in ref_state["domains"].items():
        assert (state["domains"][name]["questions"], state["domains"][name]["rollouts"]) == (d["questions"], d["rollouts"]), name
        assert abs(state["domains"][name]["reward_sum"] - d["reward_sum"]) < 1e-9, name
        assert torch.equal(state["domains"][name]["features"], d["features"]), name
    lr = lambda run: {h["step"]: h["learning_rate"] for h in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "learning_rate" in h}
    resumed_lr, ref_lr = lr(out), lr(ref)
    for step in range(killed_at + 1, steps + 1): assert abs(resumed_lr[step] - ref_lr[step]) < 1e-12, step
    # Adam's per-parameter step counts equal the uninterrupted run's (a parameter without a gradient in a step, e.g. the
    # ECG encoder in a batch without ECGs, is not stepped): the optimizer state was restored, not restarted at the resume
    opt_steps = lambda run: {k: int(v["step"]) for k, v in torch.load(Path(last_complete_checkpoint(run)) / "optimizer.pt", weights_only=True)["state"].items()}
    assert opt_steps(out) == opt_steps(ref) and max(opt_steps(out).values()) == steps
    from safetensors.torch import load_file
    a, b = load_file(out / "final" / "model.safetensors"), load_file(ref / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
