"""The shipped recipes train correctly on the CPU with tiny stand-ins for the model folders: the reference model sees ECGs
(KL exactly 0 before the first update, on both the `model.qwen` and the `model.path` routes), stage 2 starts, and resume is exact
when a checkpoint falls inside a generation cycle."""
import json, shutil, signal
from pathlib import Path

import pytest
import torch

from runs import ROOT, DEMO_CONFIG, qoqmed, rows, steps_of, train

FIXTURES = Path(__file__).parent / "fixtures"
# what a CPU, a tiny model and a few demo questions need: one process and 2 questions per step instead of the recipe's
# 8 GPUs x 128 questions (tests/test_configs_official.py checks the shipped batch). Every other setting (stage, algo, beta,
# loss and clipping, rollouts per question, sampling, optimizer and schedule, pixel limits, gradient checkpointing) is the
# shipped recipe's own.
CPU = ["training.use_cpu=true", "training.bf16=false", "model.dtype=float32", "training.max_steps=1", "training.max_completion_length=12",
       "training.save_strategy=no", "training.disable_tqdm=true", "data.check=none",
       "training.per_device_train_batch_size=10", "training.gradient_accumulation_steps=1", "training.generation_batch_size=10"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "JSONL files with absolute media paths: the demo's ECG records (twice, as stage 1's ECG data) and all demo records."
    from qoqmed.data import DEMO_DATA, read_jsonl, write_jsonl
    d = tmp_path_factory.mktemp("data")
    recs = read_jsonl(DEMO_DATA)
    ecg = [r for r in recs if r.time_series]
    for i, r in enumerate(list(ecg)): ecg.append(type(r)(**{**r.__dict__, "id": f"{r.id}-copy{i}"}))
    write_jsonl(ecg, d / "ecg.jsonl"); write_jsonl(recs, d / "all.jsonl")
    return d


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    from qoqmed.model import save_tiny_qwen
    d = tmp_path_factory.mktemp("qwen"); save_tiny_qwen(d); return d


@pytest.fixture(scope="module")
def tiny_stage1_final(tmp_path_factory):
    "A saved QoQ-Med folder standing in for runs/stage1-7b/final."
    from qoqmed.model import tiny_qoqmed
    d = tmp_path_factory.mktemp("stage1_final")
    model, processor = tiny_qoqmed(seed=3); model.save_pretrained(d); processor.save_pretrained(d)
    return d


def first_log(run):
    return next(r for r in rows(run / "metrics.jsonl") if "kl" in r)


def test_stage1_qwen_route_reference_sees_ecgs(tmp_path, data, tiny_qwen):
    from qoqmed.train import INITIAL_DIR, INITIAL_MARKER
    out = tmp_path / "stage1"
    r = qoqmed("train", "--config", ROOT / "configs" / "stage1-7b.yaml", f"training.output_dir={out}", f"model.qwen={tiny_qwen}",
               f"model.ecg_checkpoint={FIXTURES / 'ecg_jepa' / 'tiny_ecg_jepa.pth'}", f"data.train={data / 'ecg.jsonl'}", *CPU)
    assert r.returncode == 0, r.stderr[-4000:]
    log = first_log(out)
    # before any update the policy IS the reference: the KL is exactly 0 (a reference without the ECG encoder gave 0.0118)
    assert log["kl"] == 0.0 and log["drpo/rollout_kl_mean"] == 0.0 and log["drpo/kl_damping_active"] == 1.0, log
    assert {x["domain"] for x in rows(out / "completions.jsonl")} == {"ecg"}
    initial = out / INITIAL_DIR
    assert (initial / INITIAL_MARKER).is_file() and json.loads((initial / "config.json").read_text())["model_type"] == "qoqmed"


@pytest.mark.parametrize("recipe", ["stage2-7b", "stage2-32b"])
def test_stage2_path_route_starts_and_reference_is_qoqmed(tmp_path, data, tiny_stage1_final, recipe):
    out = tmp_path / recipe
    r = qoqmed("train", "--config", ROOT / "configs" / f"{recipe}.yaml", f"training.output_dir={out}", f"model.path={tiny_stage1_final}",
               f"data.train={data / 'all.jsonl'}", *CPU)
    assert r.returncode == 0, r.stderr[-4000:]
    log = first_log(out)
    assert log["kl"] == 0.0 and log["drpo/rollout_kl_mean"] == 0.0, log
    assert (out / "final" / "config.json").is_file()
    # the recipe's pixel limits (the official 65536-524288) reached the processor, which final/ keeps for evaluation
    saved = json.loads((out / "final" / "processor_config.json").read_text())["image_processor"]["size"]
    assert saved == {"shortest_edge": 65536, "longest_edge": 524288}, saved


def test_reference_model_is_a_qoqmed_with_the_starting_weights(tmp_path, tiny_stage1_final, tiny_qwen):
    "Both ways the trainer builds the reference: reloaded as QoQ-Med from the policy's folder, or copied in memory."
    from qoqmed.model import QoQMedForConditionalGeneration
    from qoqmed.train import build_reference_model, reference_source
    policy = QoQMedForConditionalGeneration.from_pretrained(tiny_stage1_final, dtype=torch.float32)
    assert reference_source(policy) == str(tiny_stage1_final)
    ref = build_reference_model(policy)
    assert type(ref) is QoQMedForConditionalGeneration and not any(p.requires_grad for p in ref.parameters())
    a, b = policy.state_dict(), ref.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = QoQMedForConditionalGeneration.from_qwen(tiny_qwen)   # its _name_or_path is the Qwen folder: never reload that
    assert reference_source(fresh) is None
    copy = build_reference_model(fresh)
    assert type(copy) is QoQMedForConditionalGeneration and torch.equal(copy.model.ecg.projection.weight, fresh.model.ecg.projection.weight)


@pytest.mark.parametrize("schedule", [["training.steps_per_generation=2"], ["training.num_iterations=2"]],
                         ids=["steps_per_generation=2", "num_iterations=2"])
def test_resume_inside_a_generation_cycle_is_exact(tmp_path, schedule):
    "One generation serves two optimizer steps; checkpoint-1 falls inside the cycle. Killed at checkpoint-2 and resumed from 1."
    from safetensors.torch import load_file
    from qoqmed.train import last_complete_checkpoint, safe_torch_load, DRPO_STATE_NAME
    ref, out = tmp_path / "ref", tmp_path / "run"
    r = train(ref, 3, *schedule, limit=4)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(steps_of(ref / "completions.jsonl")) == [1, 3]         # generations at steps 1 and 3 only
    r = train(out, 3, *schedule, kill_at=2, limit=4)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert Path(last_complete_checkpoint(out)).name == "checkpoint-1"
    r = train(out, 3, *schedule, "--resume", limit=4)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not exact" not in r.stderr
    a = safe_torch_load(Path(last_complete_checkpoint(out)) / DRPO_STATE_NAME)
    b = safe_torch_load(Path(last_complete_checkpoint(ref)) / DRPO_STATE_NAME)
    assert a["steps"] == b["steps"] == 2                                  # two generations, not three
    assert {k: v["questions"] for k, v in a["domains"].items()} == {k: v["questions"] for k, v in b["domains"].items()}
    for k in b["domains"]: assert torch.equal(a["domains"][k]["features"], b["domains"][k]["features"]), k
    assert steps_of(out / "completions.jsonl") == steps_of(ref / "completions.jsonl")
    x, y = load_file(out / "final" / "model.safetensors"), load_file(ref / "final" / "model.safetensors")
    for k in x: torch.testing.assert_close(x[k], y[k], rtol=0, atol=0, msg=k)
