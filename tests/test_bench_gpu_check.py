"""bench/gpu_check.sh, checked without a GPU: it names the four GPU checks with their limits (600 s in all), its commands parse,
and bench/train_step.py's forward check runs on a tiny model on the CPU (a few seconds; no timing is asserted)."""
import json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_names_every_check():
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [re.match(r"(\w+) \(limit (\d+) s\): (.*)", l) for l in r.stdout.splitlines()]
    lines = {m.group(1): m.group(3) for m in rows}
    limits = [int(m) for m in re.findall(r"limit (\d+) s", r.stdout)]
    assert list(lines) == ["forward", "steps", "qlora", "fsdp"] and sum(limits) == 600
    assert "--forward-size 7b" in lines["forward"] and "--size 3b" in lines["steps"] and "--qlora-size 7b" in lines["qlora"]
    assert "configs/accelerate/fsdp.yaml --num_processes 1" in lines["fsdp"] and "training.bf16=true" in lines["fsdp"]
    from qoqmed.recipes import load_run_config
    tail = lines["fsdp"].split(" -m qoqmed.train --config ")[1].split()
    cfg = load_run_config(tail[0], tail[1:])                          # the overrides the FSDP check hands qoqmed.train parse
    assert (cfg["training"]["max_steps"], cfg["training"]["use_cpu"], cfg["training"]["bf16"]) == (2, False, True)


def test_train_step_forward_check_on_cpu(tmp_path):
    out = tmp_path / "forward.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "train_step.py"), "--device", "cpu", "--skip-steps", "--skip-qlora",
                        "--forward-size", "tiny", "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    f = json.loads(out.read_text())["forward"]
    assert f["finite"] and f["ecg_tokens"] > 0 and f["tokens"] > f["ecg_tokens"]
    assert "logits finite: True" in r.stdout
