"QLoRA on the tiny model: 4-bit NF4 language model + LoRA trains, after the eval-mode forward that triggers bitsandbytes' CPU repacking."
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")


def test_qlora_tiny_trains(tmp_path):
    from qoqmed.data import read_jsonl, DEMO_DATA
    from qoqmed.model import tiny_qoqmed
    from qoqmed.train import QoQMedGRPOTrainer, build_trl_dataset, load_qoqmed, lora_config, tiny_run_config, toy_text_reward
    m, p = tiny_qoqmed(seed=0); m.save_pretrained(tmp_path / "tiny"); p.save_pretrained(tmp_path / "tiny")
    model, processor = load_qoqmed(tmp_path / "tiny", qlora=True)
    four_bit = [n for n, mod in model.named_modules() if isinstance(mod, bnb.nn.Linear4bit)]
    assert four_bit and all(".language_model." in f".{n}" for n in four_bit)          # vision tower and ECG bridge unquantised
    assert all(not mod.support_avx512bf16_for_cpu for mod in model.modules() if isinstance(mod, bnb.nn.Linear4bit))
    with torch.no_grad(): model.eval()(**processor(text=["Hello"], return_tensors="pt"))  # the forward that would repack
    recs = {r.id: r for r in read_jsonl(DEMO_DATA)}
    ds, _ = build_trl_dataset([recs["demo-ecg-normal-npy"], recs["demo-fundus-normal"]])
    trainer = QoQMedGRPOTrainer(model, reward_funcs=[toy_text_reward], processing_class=processor, train_dataset=ds,
                                args=tiny_run_config(tmp_path / "run", steps=2, beta=0.0, reward_weights=[1.0]), peft_config=lora_config(r=8))
    before = {n: q.detach().clone() for n, q in trainer.model.named_parameters() if q.requires_grad}
    assert before and all("lora_" in n and ".language_model." in n for n in before)
    trainer.train()
    assert all(not torch.equal(q, before[n]) for n, q in trainer.model.named_parameters() if n in before)
    # beta = 0 but the adapter-disabled base is the reference: DRPO's KL damping is on
    assert [h["drpo/kl_damping_active"] for h in trainer.state.log_history[:-1]] == [1.0, 1.0]


def test_qlora_config_loads_tiny(tmp_path):
    from qoqmed.train import load_run_config, build_from_config
    cfg_file = tmp_path / "q.yaml"
    cfg_file.write_text("model: {tiny: true}\nqlora: {r: 4, alpha: 8}\ndata: {train: demo}\ntraining: {beta: 0.0}\n")
    model, processor, peft = build_from_config(load_run_config(cfg_file))
    assert peft.r == 4 and any(isinstance(mod, bnb.nn.Linear4bit) for mod in model.modules())


def test_qlora_resume_restores_adapter_and_drpo(tmp_path):
    from safetensors.torch import load_file
    from qoqmed.data import read_jsonl, DEMO_DATA
    from qoqmed.model import tiny_qoqmed
    from qoqmed.train import QoQMedGRPOTrainer, build_trl_dataset, load_qoqmed, lora_config, tiny_run_config, toy_text_reward
    recs = {r.id: r for r in read_jsonl(DEMO_DATA)}
    ds, _ = build_trl_dataset([recs["demo-ecg-normal-npy"], recs["demo-fundus-normal"]])
    m, p = tiny_qoqmed(seed=0); m.save_pretrained(tmp_path / "tiny"); p.save_pretrained(tmp_path / "tiny")
    def make():
        model, processor = load_qoqmed(tmp_path / "tiny", qlora=True)
        return QoQMedGRPOTrainer(model, reward_funcs=[toy_text_reward], processing_class=processor, train_dataset=ds, peft_config=lora_config(r=8),
                                 args=tiny_run_config(tmp_path / "run", steps=2, beta=0.0, reward_weights=[1.0], save_strategy="steps", save_steps=1))
    make().train()
    ckpt = tmp_path / "run" / "checkpoint-1"
    saved = load_file(str(ckpt / "adapter_model.safetensors"))
    trainer, seen = make(), {}
    load = trainer._load_optimizer_and_scheduler
    def look(checkpoint):
        load(checkpoint)
        seen.update(drpo_steps=trainer.drpo.steps, lora={n: q.detach().clone() for n, q in trainer.model.named_parameters() if "lora_" in n})
    trainer._load_optimizer_and_scheduler = look
    trainer.train(resume_from_checkpoint=str(ckpt))
    assert seen["drpo_steps"] == 1
    for name, value in saved.items():   # adapter names in the file lack the adapter name (".default")
        live = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        torch.testing.assert_close(seen["lora"][live].float(), value.float(), rtol=0, atol=0)
