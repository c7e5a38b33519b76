"""A long run never loses finished work and never executes a checkpoint: kills inside the checkpoint-rotation window, damaged
and malicious checkpoints, resumed logs, the resumable demo. Every run is a real `qoqmed` process on the tiny model."""
import json, os, shutil, signal
from pathlib import Path

import pytest
import torch

from runs import DRIVER, qoqmed, rows, steps_of, train


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "An uninterrupted 3-step run (checkpoint after every step, save_total_limit=1)."
    out = tmp_path_factory.mktemp("ref") / "run"
    r = train(out, 3)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    "A finished 2-step run that keeps both checkpoints."
    out = tmp_path_factory.mktemp("base") / "run"
    r = train(out, 2, limit=3)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_kill_in_rotation_window_keeps_the_last_checkpoint_and_resume_logs_match(tmp_path, reference):
    from qoqmed.train import COMPLETE_MARKER, find_resume_checkpoint, last_complete_checkpoint, safe_torch_load, DRPO_STATE_NAME
    out = tmp_path / "run"
    r = train(out, 3, kill_at=2)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-3000:])
    # checkpoint-2's files are there but it never became complete; checkpoint-1 (save_total_limit=1!) survived the window
    assert (out / "checkpoint-2" / "model.safetensors").is_file() and not (out / "checkpoint-2" / COMPLETE_MARKER).exists()
    assert Path(find_resume_checkpoint(out)).name == "checkpoint-1"
    assert max(steps_of(out / "completions.jsonl")) == 2          # the killed attempt had logged step 2

    r = train(out, 3, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stderr and "checkpoint-1" in r.stderr
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-3"]   # pruned only after checkpoint-3 was complete
    # the logs of the resumed run are those of the uninterrupted run: each step once, the same samples in the same order
    assert steps_of(out / "completions.jsonl") == steps_of(reference / "completions.jsonl")
    assert [m["step"] for m in rows(out / "metrics.jsonl")] == [m["step"] for m in rows(reference / "metrics.jsonl")]
    a = safe_torch_load(Path(last_complete_checkpoint(out)) / DRPO_STATE_NAME)
    b = safe_torch_load(Path(last_complete_checkpoint(reference)) / DRPO_STATE_NAME)
    assert a["steps"] == b["steps"] == 3
    assert {k: v["questions"] for k, v in a["domains"].items()} == {k: v["questions"] for k, v in b["domains"].items()}


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "drpo_state.pt", "trainer_state.json"])
def test_damaged_files_are_named(tmp_path, two_checkpoints, name):
    from qoqmed.train import checkpoint_problems, find_resume_checkpoint
    run = tmp_path / "run"; shutil.copytree(two_checkpoints, run)
    f = run / "checkpoint-2" / name
    data = f.read_bytes()
    f.write_bytes(data[:len(data) // 2])                       # truncated
    problems = checkpoint_problems(run / "checkpoint-2")
    assert problems and all(str(f) in p for p in problems), problems
    assert Path(find_resume_checkpoint(run)).name == "checkpoint-1"
    f.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])   # same size, one byte flipped
    assert any(str(f) in p and "checksum" in p for p in checkpoint_problems(run / "checkpoint-2"))
    if name != "model.safetensors":   # without checksums a same-size flip goes unseen (a flip in a safetensors header does not)
        assert checkpoint_problems(run / "checkpoint-2", checksums=False) == []


def test_corrupt_latest_checkpoint_falls_back_loudly(tmp_path, two_checkpoints):
    from qoqmed.train import checkpoint_problems, last_complete_checkpoint
    run = tmp_path / "run"; shutil.copytree(two_checkpoints, run)
    w = run / "checkpoint-2" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1000])
    r = train(run, 2, f"--resume={run / 'checkpoint-2'}")   # asked for by name: an error naming the file, exit 2, nothing trained
    assert r.returncode == 2, r.stderr[-3000:]
    assert "checkpoint-2/model.safetensors" in r.stderr and "Traceback" not in r.stderr
    r = train(run, 3, "--resume", limit=3)                    # the newest intact one instead, said loudly
    assert r.returncode == 0, r.stderr[-3000:]
    assert "DAMAGED" in r.stderr and "checkpoint-2/model.safetensors" in r.stderr and "checkpoint-1" in r.stderr
    assert sorted(steps_of(run / "completions.jsonl")) == [1, 2, 3] and all(len(v) == 8 for v in steps_of(run / "completions.jsonl").values())
    assert Path(last_complete_checkpoint(run)).name == "checkpoint-3"
    assert checkpoint_problems(run / "checkpoint-2") == []     # step 2 was redone, and its checkpoint written anew


class _Payload:
    "Unpickling this runs a shell command that creates a file."
    def __init__(self, target): self.target = target
    def __reduce__(self): return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("name", ["drpo_state.pt", "optimizer.pt"])
def test_malicious_checkpoint_is_refused_and_never_executed(tmp_path, two_checkpoints, name):
    from qoqmed.train import COMPLETE_MARKER, UnsafeCheckpointError, checkpoint_manifest, check_checkpoint_safe, safe_torch_load
    run = tmp_path / "run"; shutil.copytree(two_checkpoints, run)
    sentinel = tmp_path / "PWNED"
    ckpt = run / "checkpoint-2"
    torch.save({"version": 1, "steps": _Payload(sentinel)}, ckpt / name)
    marker = json.loads((ckpt / COMPLETE_MARKER).read_text())   # the attacker also rewrites the manifest, so the file looks intact
    marker["files"] = checkpoint_manifest(ckpt)
    (ckpt / COMPLETE_MARKER).write_text(json.dumps(marker))
    with pytest.raises(UnsafeCheckpointError, match=f"{name}: loading this file would call .*system"): check_checkpoint_safe(ckpt)
    with pytest.raises(UnsafeCheckpointError): safe_torch_load(ckpt / name)
    r = train(run, 3, "--resume")
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"checkpoint-2/{name}" in r.stderr and "system" in r.stderr and "Traceback" not in r.stderr
    assert not sentinel.exists(), "the checkpoint's code ran"


def test_new_run_refuses_to_prune_an_earlier_runs_checkpoints(tmp_path, two_checkpoints):
    run = tmp_path / "run"; shutil.copytree(two_checkpoints, run)
    r = train(run, 2)
    assert r.returncode == 2 and "--resume" in r.stderr and "checkpoint-2" in r.stderr, r.stderr[-2000:]
    assert (run / "checkpoint-1").is_dir() and (run / "checkpoint-2").is_dir()


def test_demo_is_resumable_after_a_kill(tmp_path):
    from qoqmed.train import last_complete_checkpoint
    out = tmp_path / "demo"
    r = qoqmed("demo", "--out", out, "--steps", 3, "--no-progress", kill_at=2)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-3000:])
    assert Path(last_complete_checkpoint(out)).name == "checkpoint-1"
    r = qoqmed("demo", "--out", out, "--steps", 3, "--no-progress", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stdout and "checkpoint-1" in r.stdout
    trace = steps_of(out / "completions.jsonl")
    assert sorted(trace) == [1, 2, 3] and all(len(v) == 8 for v in trace.values())
    assert Path(last_complete_checkpoint(out)).name == "checkpoint-3" and (out / "final" / "config.json").is_file()
    r = qoqmed("demo", "--out", out, "--steps", 1, "--no-progress")   # a new demo in the same folder starts over, and says so
    assert r.returncode == 0 and "starting over" in r.stdout, r.stdout[-2000:]
    assert sorted(steps_of(out / "completions.jsonl")) == [1] and Path(last_complete_checkpoint(out)).name == "checkpoint-1"
