"""The vLLM rollout path of `QoQMedGRPOTrainer`, with vLLM's generation simulated by transformers' (vLLM does not run on a
CPU): a batch mixing an image prompt and a text-only prompt trains, vLLM is handed the loaded images (None for the text-only
prompt, as TRL's convention is), and TRL does not process the images a second time after generation."""
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from trl.trainer.utils import pad


class SimulatedVLLM:
    "Stands in for TRL's `VLLMGeneration`: samples with the policy itself, from the token ids and the trainer's media rows."
    def __init__(self, trainer): self.trainer, self.calls = trainer, []

    def sync_weights(self): pass

    def generate(self, prompts, images, num_generations, profiler=None):
        from qoqmed.train import collate_media
        t = self.trainer
        self.calls.append(dict(n=len(prompts), images=images))
        rows = t._media_rows   # what `_tokenize_prompts` loaded for these prompts, in the same order
        assert rows is not None and len(rows) == len(prompts)
        ids = pad([torch.tensor(p) for p in prompts], padding_value=t._tokenizer.pad_token_id, padding_side="left")
        am = pad([torch.ones(len(p), dtype=torch.long) for p in prompts], padding_value=0, padding_side="left")
        mm = torch.zeros_like(ids)
        for j, r in enumerate(rows): mm[j, ids.size(1) - len(r["mm"]):] = torch.tensor(r["mm"])
        media = collate_media([r["media"] for r in rows])
        model = t.accelerator.unwrap_model(t.model)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=am, mm_token_type_ids=mm, **media, do_sample=True,
                                 max_new_tokens=t.args.max_completion_length, output_scores=True, return_dict_in_generate=True,
                                 pad_token_id=t._tokenizer.pad_token_id)
        new = out.sequences[:, ids.size(1):]
        logps = torch.stack([s.float().log_softmax(-1) for s in out.scores], 1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        completion_ids, logprobs = [], []
        for row, lp in zip(new.tolist(), logps.tolist()):
            n = next((i + 1 for i, tok in enumerate(row) if tok in t.eos_token_ids), len(row))
            completion_ids.append(row[:n]); logprobs.append([[x] for x in lp[:n]])
        return prompts, completion_ids, logprobs, None


def test_vllm_rollouts_with_text_only_and_image_prompts(tmp_path):
    from PIL import Image
    from qoqmed.data import DEMO_DATA, read_jsonl
    from qoqmed.model import tiny_qoqmed
    from qoqmed.train import QoQMedGRPOTrainer, build_trl_dataset, check_vllm_data, tiny_run_config, toy_text_reward
    recs = {r.id: r for r in read_jsonl(DEMO_DATA)}
    ds, _ = build_trl_dataset([recs["demo-fundus-normal"], recs["demo-ehr-vignette"]])   # an image question and a text-only one
    check_vllm_data(tiny_run_config(tmp_path, use_vllm=False), ds)
    model, processor = tiny_qoqmed(seed=0)
    trainer = QoQMedGRPOTrainer(model, reward_funcs=[toy_text_reward], args=tiny_run_config(tmp_path, steps=2, reward_weights=[1.0]),
                                train_dataset=ds, processing_class=processor)
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, SimulatedVLLM(trainer), 0   # what `use_vllm=True` sets up, minus vLLM
    outputs = []
    def keep(inputs, _f=trainer._generate_and_score_completions):
        out = _f(inputs); outputs.append(out); return out
    trainer._generate_and_score_completions = keep
    trainer.train()
    assert trainer.state.global_step == 2 and len(trainer.vllm_generation.calls) == 2
    for call in trainer.vllm_generation.calls:
        kinds = {type(i[0]).__name__ if i else None for i in call["images"]}
        assert kinds == {"Image", None}, kinds   # PIL images for the fundus question, None for the vignette
        assert all(isinstance(im, Image.Image) for i in call["images"] if i for im in i)
    for out in outputs:   # the log-prob passes read our media rows; TRL did not re-process the images into pixel_values
        assert "pixel_values" not in out and "image_grid_thw" not in out and len(out["qoqmed_rows"]) == 8
    assert trainer.state.log_history[0]["kl"] is not None
