"""The shipped full-size recipes follow the official QoQ-Med run config (examples/grpo_climb_engaging.yaml in DDVD233/QoQ_Med,
an EasyR1 config), mapped onto TRL 1.16's GRPOConfig names. Only the configs are read: no model is loaded."""
import dataclasses, inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# The official values (grpo_climb_engaging.yaml; EasyR1's ActorConfig defaults where the file leaves them out).
OFFICIAL = dict(rollout_batch_size=512,   # questions per rollout batch
                n=5, temperature=1.0, top_p=0.99,
                kl_coef=1e-4,             # use_kl_loss: true, kl_penalty: low_var_kl (k3)
                lr=1e-6, weight_decay=0.01, lr_warmup_ratio=0.0, max_grad_norm=1.0,
                global_batch_size=128,    # questions per optimizer step: EasyR1 multiplies it by n (fsdp_workers._init_config)
                max_response_length=4000, min_pixels=65536, max_pixels=524288, total_episodes=3,
                clip_ratio_low=0.2, clip_ratio_high=0.3, clip_ratio_dual=3.0)
# GPUs each config is written for (its header says so): a TRL batch is per process, so the step size depends on it.
GPUS = {"stage1-7b": 8, "stage2-7b": 8, "stage2-32b": 32}
STAGE = {"stage1-7b": "stage1", "stage2-7b": "stage2", "stage2-32b": "stage2"}


def recipe(name):
    from qoqmed.train import QoQMedGRPOConfig, load_run_config
    cfg = load_run_config(CONFIGS / f"{name}.yaml", ["output_dir=/tmp/qoqmed-config-check", "use_cpu=true", "bf16=false"])
    return cfg, QoQMedGRPOConfig(**cfg["training"])


@pytest.mark.parametrize("name", list(GPUS))
def test_sampling_kl_and_lengths(name):
    cfg, a = recipe(name)
    assert a.num_generations == OFFICIAL["n"]
    assert (a.temperature, a.top_p) == (OFFICIAL["temperature"], OFFICIAL["top_p"])
    assert a.beta == OFFICIAL["kl_coef"]
    assert a.max_completion_length == OFFICIAL["max_response_length"]
    assert a.num_train_epochs == OFFICIAL["total_episodes"]
    assert cfg["model"]["min_pixels"] == OFFICIAL["min_pixels"] and cfg["model"]["max_pixels"] == OFFICIAL["max_pixels"]
    from qoqmed.recipes import _pixel_limits
    assert _pixel_limits(cfg["model"]) == dict(min_pixels=65536, max_pixels=524288)   # the key build_from_config applies


@pytest.mark.parametrize("name", list(GPUS))
def test_optimizer_and_loss(name):
    _, a = recipe(name)
    assert a.optim.value == "adamw_torch_fused" and (a.adam_beta1, a.adam_beta2) == (0.9, 0.999)
    assert a.learning_rate == OFFICIAL["lr"] and a.weight_decay == OFFICIAL["weight_decay"]
    assert a.lr_scheduler_type.value == "constant" and a.warmup_steps == 0      # no warm-up, then constant
    assert a.max_grad_norm == OFFICIAL["max_grad_norm"]
    assert (a.epsilon, a.epsilon_high, a.delta) == (OFFICIAL["clip_ratio_low"], OFFICIAL["clip_ratio_high"], OFFICIAL["clip_ratio_dual"])
    assert a.loss_type == "bnpo" and a.num_iterations == 1                     # token mean per micro-batch; ppo_epochs 1


@pytest.mark.parametrize("name", list(GPUS))
def test_batch_in_completions(name):
    "EasyR1 counts questions, TRL completions: 512 x 5 per generation, 128 x 5 per optimizer step, on the config's GPUs."
    _, a = recipe(name)
    n, gpus = a.num_generations, GPUS[name]
    assert a.generation_batch_size == OFFICIAL["rollout_batch_size"] * n == 2560
    step = a.per_device_train_batch_size * a.gradient_accumulation_steps * gpus
    assert step == OFFICIAL["global_batch_size"] * n == 640
    # TRL's own checks at that world size: the generation batch splits into whole micro-steps and whole question groups
    assert a.generation_batch_size % (a.per_device_train_batch_size * gpus) == 0 and a.generation_batch_size % n == 0
    steps_per_generation = a.generation_batch_size // (a.per_device_train_batch_size * gpus)
    assert steps_per_generation == 4 * a.gradient_accumulation_steps            # 4 optimizer steps per rollout batch, as 512/128
    header = (CONFIGS / f"{name}.yaml").read_text().split("model:")[0]
    assert f"{gpus} GPUs" in header or f"{gpus // 8} nodes x 8 GPUs" in header


@pytest.mark.parametrize("name", list(GPUS))
def test_what_trains(name):
    "Stage 1 freezes the vision tower (the paper); stage 2 trains everything (the official freeze_vision_tower: false)."
    _, a = recipe(name)
    assert a.stage == STAGE[name] and a.freeze_vision is False and a.algo == "drpo"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_no_unchecked_wording(path):
    assert "not yet checked" not in path.read_text()


def test_trl_names_the_mapping_relies_on():
    "TRL's KL term is k3 (EasyR1's low_var_kl), and TRL 1.16 has no prompt-length limit for the official 4000 to map onto."
    from trl import GRPOConfig, GRPOTrainer
    src = inspect.getsource(GRPOTrainer._compute_loss)
    assert "torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1" in src
    assert "max_prompt_length" not in {f.name for f in dataclasses.fields(GRPOConfig)}
