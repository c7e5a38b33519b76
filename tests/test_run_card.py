"""A run folder's README.md is QoQ-Med's run card, not TRL's stock Hub card: what ran, each domain's reward at its first and last
logged step (equal to metrics.jsonl's), the DRPO state of the last checkpoint, and the commands that resume, evaluate and inspect
the run. A demo and a config run print no deprecation warning about gradient checkpointing."""
import re

import pytest
import torch

from runs import ROOT, qoqmed, rows, train

OLD_NAME = "`gradient_checkpointing` is deprecated"
TRL_READ = "`is_gradient_checkpointing` is deprecated"


def card_table(card, heading):
    "The rows of the Markdown table under `## heading`, as lists of cells."
    section = card.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [l for l in section.splitlines() if l.startswith("| ") and not l.startswith("| domain") and not l.startswith("| |")]
    return [[c.strip() for c in l.strip("|").split("|")] for l in lines]


def check_rewards_match(card, metrics):
    "The card's start/end reward per domain is the first/last `domain/<d>/reward` of metrics.jsonl, at those steps."
    table = {r[0]: r for r in card_table(card, "Reward by domain")}
    expected = {}
    for m in metrics:
        for k, v in m.items():
            if k.startswith("domain/") and k.endswith("/reward") and k.count("/") == 2 and v is not None:
                expected.setdefault(k.split("/")[1], []).append((m["step"], v))
    assert set(table) == set(expected) and expected
    for d, pts in expected.items():
        n, s0, r0, s1, r1, change = table[d][1:]
        assert (int(n), int(s0), int(s1)) == (len(pts), pts[0][0], pts[-1][0]), d
        assert float(r0) == pytest.approx(pts[0][1], abs=5e-5) and float(r1) == pytest.approx(pts[-1][1], abs=5e-5), d
        assert float(change) == pytest.approx(pts[-1][1] - pts[0][1], abs=1e-4), d


def check_drpo_state(card, checkpoint):
    "The card's DRPO table holds the domains, question and rollout counts of the last checkpoint's drpo_state.pt."
    state = torch.load(checkpoint / "drpo_state.pt", weights_only=True)
    table = {r[0]: r for r in card_table(card, "DRPO state")}
    assert set(table) == set(state["domains"])
    for d, st in state["domains"].items():
        assert (int(table[d][1]), int(table[d][2])) == (st["questions"], st["rollouts"]), d
        assert float(table[d][3]) == pytest.approx(st["reward_sum"] / st["rollouts"], abs=5e-5), d


def test_demo_run_card(tmp_path):
    out = tmp_path / "demo"
    res = qoqmed("demo", "--out", out, "--steps", 3, "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    assert OLD_NAME not in res.stderr + res.stdout and TRL_READ not in res.stderr + res.stdout, res.stderr[-3000:]
    card = (out / "README.md").read_text()
    assert card.startswith("# QoQ-Med run `demo`") and "[None]" not in card and 'model="None"' not in card
    assert "step 3 of 3 (finished)" in card and "14 records over 8 domains" in card
    check_rewards_match(card, rows(out / "metrics.jsonl"))
    check_drpo_state(card, out / "checkpoint-3")
    assert f"qoqmed demo --out {out} --steps 3 --seed 0 --algo drpo --resume" in card
    assert f"qoqmed eval --model {out}/final --data " in card and f"qoqmed inspect {out} --html {out}/run.html" in card
    assert not any((c / "README.md").exists() for c in out.glob("checkpoint-*"))   # TRL writes none there, nor do we


def test_config_run_card(tmp_path):
    out = tmp_path / "run"
    res = train(out, 2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert OLD_NAME not in res.stderr and TRL_READ not in res.stderr, res.stderr[-3000:]
    card = (out / "README.md").read_text()
    assert card.startswith("# QoQ-Med run `run`") and "[None]" not in card
    assert "step 2 of 2 (finished)" in card and "the tiny random QoQ-Med (seed 0)" in card
    assert re.search(r"`qoqmed train --config \S*demo\.yaml .*training\.max_steps=2.* --resume`", card)
    assert "```yaml" in card and "activation_checkpointing: true" in card   # the resolved config, TRL's default under the new name
    check_rewards_match(card, rows(out / "metrics.jsonl"))
    check_drpo_state(card, out / "checkpoint-2")


def test_old_checkpointing_name_in_a_config(tmp_path):
    "`training.gradient_checkpointing` (transformers' old name) is read as activation_checkpointing; both, disagreeing, is an error."
    from qoqmed.recipes import _training_fields, ConfigError
    path = tmp_path / "x.yaml"
    assert _training_fields({"training": {"gradient_checkpointing": False}}, path)["activation_checkpointing"] is False
    assert "gradient_checkpointing" not in _training_fields({"training": {"gradient_checkpointing": False}}, path)
    assert _training_fields({"training": {}}, path)["activation_checkpointing"] is True
    with pytest.raises(ConfigError, match="disagree"):
        _training_fields({"training": {"gradient_checkpointing": False, "activation_checkpointing": True}}, path)
    for cfg in sorted((ROOT / "configs").glob("*.yaml")):
        assert "gradient_checkpointing:" not in cfg.read_text(), cfg.name
