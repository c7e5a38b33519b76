"""Training-step benchmark of the DRPO trainer (GPU).

1. Step time of GRPO vs DRPO on a Qwen2.5-VL-3B-size random QoQ-Med in bf16, and the share of a step spent on rewards
   and advantages (the paper's claim: reward and advantage computation < 2% of a step). DRPO's own costs are reported
   separately: the estimator (`DRPOAdvantage`), and the extra no-grad policy forward that DRPO's KL damping needs when
   TRL has not computed old-policy log-probs.
2. Peak GPU memory of the `qlora-7b` setup (4-bit NF4 language model + LoRA) on a 7B-size random QoQ-Med
   (target <= 20 GB).
3. (`--forward-size 7b`) One bf16 forward of a 7B-size random QoQ-Med on an interleaved image + ECG + text prompt: time,
   peak memory, and that the logits are finite and the ECG tokens reached the language model.

    python bench/train_step.py                      # parts 1 and 2, on the GPU
    python bench/train_step.py --forward-size 7b --skip-steps --skip-qlora   # part 3 alone
    python bench/train_step.py --size tiny --qlora-size tiny --forward-size tiny --device cpu --steps 2   # smoke test on a CPU
bench/gpu_check.sh runs every GPU-only check of the project in one go (this script's three parts and a 1-GPU FSDP step).

Prints a table and writes bench/train_step.json. Random weights: the timings depend on shapes, not on what was learned.
"""
from __future__ import annotations
import argparse, json, os, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch


def qwen25_vl_3b_config(n_ecg_tokens=50):
    "QoQ-Med with Qwen2.5-VL-3B-Instruct's shapes (LLM 36 x 2048, vision 32 x 1280) and the released ECG-JEPA."
    from qoqmed.model import QoQMedConfig
    from qoqmed.ecg import ECGJEPAConfig
    text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                num_key_value_heads=2, max_position_embeddings=128000, bos_token_id=151643, eos_token_id=151645, rms_norm_eps=1e-6,
                tie_word_embeddings=True, rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0})
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
    return QoQMedConfig(text_config=text, vision_config=vision, ecg_config=ECGJEPAConfig(), n_ecg_tokens=n_ecg_tokens,
                        bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=True)


def build_model(size, device, dtype):
    from qoqmed.model import QoQMedForConditionalGeneration, tiny_qoqmed, tiny_qoqmed_config, qoqmed_7b_config
    cfg = {"tiny": tiny_qoqmed_config, "3b": qwen25_vl_3b_config, "7b": qoqmed_7b_config}[size]()
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device): model = QoQMedForConditionalGeneration(cfg)
    finally: torch.set_default_dtype(old)
    return model


def build_processor(max_pixels):
    from qoqmed.model import QoQMedProcessor, build_qwen25_tokenizer, tiny_image_processor
    return QoQMedProcessor(image_processor=tiny_image_processor(max_pixels=max_pixels), tokenizer=build_qwen25_tokenizer())


class _Timed:
    "A DRPOAdvantage whose calls are timed; everything else passes through."
    def __init__(self, inner, call): self._inner, self._call = inner, call
    def __call__(self, *a, **k): return self._call(*a, **k)
    def __getattr__(self, name): return getattr(self._inner, name)


def step_times(algo, size, device, steps, batch, generations, completion, max_pixels):
    "Mean step time and the time inside reward functions, the DRPO estimator and DRPO's extra forward, per step."
    from qoqmed.data import DEMO_DATA
    from qoqmed.train import QoQMedGRPOTrainer, QoQMedGRPOConfig, build_trl_dataset
    import qoqmed.train as qt
    bf16 = device == "cuda"
    model = build_model(size, device, torch.bfloat16 if bf16 else torch.float32)
    processor = build_processor(max_pixels)
    ds, _ = build_trl_dataset(DEMO_DATA)
    ds = ds.shuffle(seed=0)
    out = tempfile.mkdtemp(prefix=f"bench-{algo}-")
    args = QoQMedGRPOConfig(output_dir=out, algo=algo, max_steps=steps + 1, per_device_train_batch_size=batch, num_generations=generations,
                            max_completion_length=completion, learning_rate=1e-6, beta=0.01, bf16=bf16, use_cpu=device == "cpu",
                            activation_checkpointing=device == "cuda", logging_steps=1, save_strategy="no", report_to="none",
                            disable_tqdm=True, completions_trace=False, seed=0)
    trainer = QoQMedGRPOTrainer(model, args=args, train_dataset=ds, processing_class=processor)
    timers = {"rewards": [], "drpo_estimator": [], "drpo_kl_forward": []}
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    def timed(name, f):
        def g(*a, **k):
            sync(); t = time.perf_counter(); r = f(*a, **k); sync(); timers[name].append(time.perf_counter() - t); return r
        return g
    trainer._calculate_rewards = timed("rewards", trainer._calculate_rewards)
    if trainer.drpo is not None:
        trainer.drpo = _Timed(trainer.drpo, timed("drpo_estimator", trainer.drpo.__call__))
        trainer._reference_and_policy_logps = timed("drpo_kl_forward", trainer._reference_and_policy_logps)
    trainer.train()
    step = [h["step_time"] for h in trainer.state.log_history if "step_time" in h][1:]   # the first step warms up
    mean = lambda xs: sum(xs[1:]) / max(len(xs) - 1, 1) if len(xs) > 1 else (xs[0] if xs else 0.0)
    res = dict(algo=algo, step_s=sum(step) / len(step), **{f"{k}_s": mean(v) for k, v in timers.items()})
    del trainer, model
    if device == "cuda": torch.cuda.empty_cache()
    return res


def qlora_peak_memory(size, device, steps, batch, generations, completion, max_pixels):
    "Peak GPU memory (GB) of QLoRA training (qlora-7b recipe) on a random model of the given size."
    from qoqmed.data import DEMO_DATA
    from qoqmed.train import QoQMedGRPOTrainer, QoQMedGRPOConfig, build_trl_dataset, load_qoqmed, lora_config
    tmp = Path(tempfile.mkdtemp(prefix="bench-qlora-"))
    model = build_model(size, "cpu", torch.bfloat16)   # written once to disk, then loaded 4-bit as a user would
    model.save_pretrained(tmp); build_processor(max_pixels).save_pretrained(tmp); del model
    if device == "cuda": torch.cuda.reset_peak_memory_stats()
    model, processor = load_qoqmed(tmp, qlora=True, device_map={"": 0} if device == "cuda" else None)
    ds, _ = build_trl_dataset(DEMO_DATA)
    args = QoQMedGRPOConfig(output_dir=str(tmp / "run"), algo="drpo", beta=0.0, max_steps=steps, per_device_train_batch_size=batch,
                            num_generations=generations, max_completion_length=completion, learning_rate=1e-5, bf16=device == "cuda",
                            use_cpu=device == "cpu", activation_checkpointing=True, logging_steps=1, save_strategy="no", report_to="none",
                            disable_tqdm=True, completions_trace=False)
    trainer = QoQMedGRPOTrainer(model, args=args, train_dataset=ds, processing_class=processor, peft_config=lora_config())
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    return dict(size=size, peak_gb=peak, trainable=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad))


def forward_check(size, device, max_pixels):
    "One forward of a random QoQ-Med (bf16 on the GPU) on an image + ECG + text prompt: seconds, peak GB, finite logits."
    import numpy as np
    from PIL import Image
    from qoqmed.model import TIME_SERIES_TOKEN, TIME_SERIES_TOKEN_ID
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cuda": torch.cuda.reset_peak_memory_stats()
    model = build_model(size, device, dtype).eval()
    processor = build_processor(max_pixels)
    text = (f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><|vision_start|>{TIME_SERIES_TOKEN}<|vision_end|>"
            "Findings?<|im_end|>\n<|im_start|>assistant\n")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (448, 448, 3), dtype=np.uint8))
    ecg = np.random.default_rng(1).normal(size=(8, 2500)).astype(np.float32)
    inputs = processor(text=text, images=[image], time_series=[ecg], return_tensors="pt")
    inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
    n_ecg = int((inputs["input_ids"] == TIME_SERIES_TOKEN_ID).sum())
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    with torch.no_grad():
        model(**inputs); sync()                      # warm-up
        t = time.perf_counter(); logits = model(**inputs).logits; sync(); seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    res = dict(size=size, dtype=str(dtype), tokens=int(inputs["input_ids"].shape[1]), ecg_tokens=n_ecg, seconds=seconds, peak_gb=peak,
               finite=bool(torch.isfinite(logits).all()), parameters=sum(p.numel() for p in model.parameters()))
    del model, logits
    if device == "cuda": torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="3b", choices=["tiny", "3b", "7b"])
    ap.add_argument("--qlora-size", default="7b", choices=["tiny", "3b", "7b"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--completion", type=int, default=256)
    ap.add_argument("--max-pixels", type=int, default=448 * 448)
    ap.add_argument("--forward-size", default=None, choices=["tiny", "3b", "7b"], help="also run part 3 on a model of this size")
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--skip-qlora", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).with_name("train_step.json")))
    a = ap.parse_args()
    device_name = torch.cuda.get_device_name(0) if a.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    results = dict(device=device_name, torch=torch.__version__, args=vars(a))
    if not a.skip_steps:
        rows = [step_times(algo, a.size, a.device, a.steps, a.batch, a.generations, a.completion, a.max_pixels) for algo in ("grpo", "drpo")]
        results["steps"] = rows
        print(f"\n## Train step: {a.size} model, {device_name}, batch {a.batch} = {a.batch // a.generations} questions x {a.generations} rollouts, completions <= {a.completion} tokens")
        print("| algo | step (s) | rewards (s) | DRPO estimator (s) | DRPO KL forward (s) | rewards+advantage share of step |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            share = (r["rewards_s"] + r["drpo_estimator_s"]) / r["step_s"]
            print(f"| {r['algo']} | {r['step_s']:.3f} | {r['rewards_s']:.4f} | {r['drpo_estimator_s']:.4f} | {r['drpo_kl_forward_s']:.3f} | {share:.2%} |")
        g, d = rows
        print(f"DRPO / GRPO step time: {d['step_s'] / g['step_s']:.3f}")
    if not a.skip_qlora:
        q = qlora_peak_memory(a.qlora_size, a.device, 2, min(a.batch, 4), min(a.generations, 4), a.completion, a.max_pixels)
        results["qlora"] = q
        print(f"\nQLoRA ({a.qlora_size}, 4-bit NF4 LM + LoRA r=16): peak GPU memory {q['peak_gb']:.2f} GB (target <= 20 GB), "
              f"{q['trainable'] / 1e6:.1f} M trainable parameters")
    if a.forward_size:
        f = forward_check(a.forward_size, a.device, a.max_pixels)
        results["forward"] = f
        print(f"\nForward ({f['size']}, {f['parameters'] / 1e9:.2f} B parameters, {f['dtype']}): {f['tokens']} tokens "
              f"({f['ecg_tokens']} ECG), {f['seconds']:.3f} s, peak GPU memory {f['peak_gb']:.2f} GB, logits finite: {f['finite']}")
        if not f["finite"]: raise SystemExit("forward: non-finite logits")
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(f"\nwritten {a.out}")


if __name__ == "__main__":
    main()
