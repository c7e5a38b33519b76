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
