"Every `algo` trains a step on the tiny model with images and ECGs, and uses the advantages it says it uses."
import copy, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from qoqmed.data import read_jsonl, DEMO_DATA
from qoqmed.drpo import DRPOAdvantage
from qoqmed.train import (ALGOS, QoQMedGRPOTrainer, build_trl_dataset, default_reward_funcs, tiny_run_config, toy_text_reward)
from qoqmed.trainer import total_rewards


@pytest.fixture(scope="module")
def data():
    recs = {r.id: r for r in read_jsonl(DEMO_DATA)}
    ds, _ = build_trl_dataset([recs[i] for i in ("demo-fundus-normal", "demo-ecg-normal-npy")])
    return ds


CASES = [(algo, None) for algo in ALGOS] + [("drpo", "sum")]

@pytest.mark.parametrize("algo,reward_total", CASES, ids=[a if t is None else f"{a}-{t}" for a, t in CASES])
def test_algo_one_step(algo, reward_total, data, tmp_path):
    from qoqmed.model import tiny_qoqmed
    model, processor = tiny_qoqmed(seed=0)
    funcs = default_reward_funcs("paper", processor) + [toy_text_reward]
    args = tiny_run_config(tmp_path, steps=1, algo=algo, reward_weights=[0.6, 0.2, 0.2, 1.0], reward_total=reward_total)
    assert args.reward_total == (reward_total or "renormalized")
    trainer = QoQMedGRPOTrainer(model, reward_funcs=funcs, args=args, train_dataset=data, processing_class=processor)
    captured = {}
    if trainer.drpo is not None:
        inner = trainer.drpo
        class Rec:
            def __getattr__(self, k): return getattr(inner, k)
            def __call__(self, rewards, groups, domains, kl=None, return_stats=False):
                captured.update(state=copy.deepcopy(inner.state_dict()), args=(rewards.clone(), groups.clone(), list(domains)),
                                kl=None if kl is None else kl.clone())
                return inner(rewards, groups, domains, kl=kl, return_stats=return_stats)
        trainer.drpo = Rec()
    outs = []
    f = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: outs.append(f(inputs)) or outs[-1]
    trainer.train()
    adv = outs[0]["advantages"]
    assert adv.shape == (8,) and torch.isfinite(adv).all()
    logs = trainer.state.log_history[0]
    assert "domain/ecg/reward" in logs and "domain/fundus/reward" in logs
    if algo == "grpo":
        assert trainer.drpo is None and "drpo/kl_damping_active" not in logs
        r = (trainer._last_rewards_per_func * torch.tensor([0.6, 0.2, 0.2, 1.0])).nansum(1).view(-1, 4)
        grpo = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)   # TRL's own formula
        torch.testing.assert_close(adv, grpo, atol=1e-5, rtol=1e-5)
    else:
        check = DRPOAdvantage(args.drpo_config()); check.load_state_dict(captured["state"])
        rewards, groups, domains = captured["args"]
        rpf, w = trainer._last_rewards_per_func.cpu(), torch.tensor([0.6, 0.2, 0.2, 1.0])
        ecg = torch.tensor([d == "ecg" for d in domains])
        assert torch.isnan(rpf[ecg, 1]).all() and not torch.isnan(rpf[~ecg, 1]).any()   # the ECG has no box: its IoU is None
        torch.testing.assert_close(rewards, total_rewards(rpf, w, args.reward_total))
        if args.reward_total == "renormalized":   # the weighted mean over the functions that apply: 1.8 of the weight for the ECG, 2.0 with a box
            torch.testing.assert_close(rewards, (rpf * w).nansum(1) / torch.where(ecg, 1.8, 2.0))
        else: torch.testing.assert_close(rewards, (rpf * w).nansum(1))
        torch.testing.assert_close(adv, check(rewards, groups, domains, kl=captured["kl"]))
        assert (captured["kl"] is not None) == (algo == "drpo")   # only full DRPO damps by the KL
        assert logs["drpo/kl_damping_active"] == float(algo == "drpo")
        assert logs["drpo/ecg/N_d"] == 1.0 and "drpo/ecg/T_d" in logs
