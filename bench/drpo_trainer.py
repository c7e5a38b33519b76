"""DRPO vs GRPO through the real trainer (`QoQMedGRPOTrainer`) on a synthetic multi-domain task a tiny QoQ-Med can learn on a CPU.

Usage: python bench/drpo_trainer.py [--seeds 3] [--steps 40] [--jobs 2] [--out bench]
       python bench/drpo_trainer.py --quick        # smoke run: 1 seed, 2 RL steps per algorithm, about a minute

The task (`TASK`): four domains with skewed frequencies (the paper's imbalance), each with its own rule from a cue in the input
to one of two labels of its own, answered in `\\boxed{}` and scored by the paper's reward (`qoqmed.rewards`; no boxes, so
0.75 accuracy + 0.25 aux after renormalisation):

  ehr         60%  text cue   (presenting complaint)           -> flu | stroke
  chest_xray  25%  image cue  (bright vs dark 56x56 PNG)       -> opacity | clear
  ecg         10%  ECG cue    (heart rate of an 8-lead .npy)   -> fast | slow  (140-180 vs 35-50 bpm)
  dermoscopy   5%  text cue   (dermoscopy report)              -> melanoma | nevus

Per seed: a tiny random QoQ-Med (`qoqmed.model.tiny_qoqmed`) gets a short supervised warm start (plain torch, AdamW) that
teaches the output format `<think>...</think>\\boxed{label}` and each domain's label set, with labels that are right only
`--label-accuracy` (75%) of the time: a weak prior, like a pretrained model's. (With uniform labels the tiny model starts at
chance and, in the RL budget a CPU allows, learned nothing at all: its policy collapsed to one answer per domain.) The prompts
omit the long `FORMAT_PROMPT` (the warm start teaches the format). Then GRPO (`algo=grpo`), DRPO domain-only
(`algo=drpo_domain_only`: domain temperature only) and full DRPO (`algo=drpo`: domain + cluster temperatures + KL damping)
train from the same warm-started weights, on the same question stream in the same order (`shuffle_dataset=False`), with the
same seed, budget and hyper-parameters; only `algo` differs. Every `--eval-every` steps the policy answers a held-out balanced
set (4 answers per question sampled at the rollout temperature, fixed seed); the script reports per-domain accuracy and
macro-F1 (`qoqmed.metrics.domain_metrics`) curves, mean ± standard error over seeds, the trainer's per-domain reward
(`domain/<d>/reward`), tables of the final scores in the paper's form, and writes `drpo_trainer.png` and `drpo_trainer.json`
into `--out`. Generation samples through `inverse_cdf_sampling` (the same distribution as `torch.multinomial`, ~10x cheaper on a
CPU over a 151,680-token vocabulary); nothing in the trainer is changed.
"""
from __future__ import annotations
import argparse, json, math, os, sys, tempfile, time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"): os.environ.setdefault(_v, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from qoqmed.model import tiny_qoqmed
from qoqmed.records import Record, build_messages, load_inputs
import qoqmed.rewards as rewards

ALGOS = ("grpo", "drpo_domain_only", "drpo")
THINK = "<think>\nChecked.\n</think>\n"   # the warm start's reasoning: the same for every answer


@dataclass(frozen=True)
class Domain:
    "One domain of the synthetic task: its share of the training stream, where its cue is, and its two labels."
    name: str # a `qoqmed.records.DOMAINS` name
    share: float # fraction of the training questions
    cue: str # "text", "image" or "ecg"
    labels: tuple # (label of cue A, label of cue B)
    question: str # the question (with its media marker)


TASK = (
    Domain("ehr", 0.60, "text", ("flu", "stroke"), "What is the most likely diagnosis?"),
    Domain("chest_xray", 0.25, "image", ("opacity", "clear"), "<image>\nAbove is a chest radiograph. What is the finding?"),
    Domain("ecg", 0.10, "ecg", ("fast", "slow"), "<ecg>\nAbove is a resting ECG. Is the heart rate fast or slow?"),
    Domain("dermoscopy", 0.05, "text", ("melanoma", "nevus"), "What is the diagnosis?"),
)
_EHR_CUES = ("fever, a dry cough and aching muscles", "sudden weakness of the left arm and slurred speech")
_DERM_CUES = ("an irregular border and a blue-white veil", "a regular border and a uniform brown network")
_DISTRACTORS = ("Vital signs are stable.", "No known allergies.", "She takes no medication.", "He smokes ten cigarettes a day.",
                "Blood pressure 128/82 mmHg.", "The history is otherwise unremarkable.")


def _write_image(path:Path, bright:bool, rng):
    "A 56 x 56 grey radiograph-like PNG: a bright (opacity) or dark (clear) field with noise and a random rib-like band."
    from PIL import Image
    a = rng.normal(175 if bright else 75, 28, (56, 56))
    r = rng.integers(8, 48); a[r:r + 4] += 30
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB").save(path)


def _write_ecg(path:Path, fast:bool, rng):
    "An 8-lead, 10 s, 250 Hz synthetic ECG in mV as (8, 2500) .npy: beats (QRS + T wave) at 140-180 bpm (fast) or 35-50 bpm (slow)."
    hr = rng.uniform(140, 180) if fast else rng.uniform(35, 50)
    t = np.arange(2500) / 250
    x = np.zeros((8, 2500))
    bump = lambda c, w: np.exp(-0.5 * ((t - c) / w) ** 2)[None]
    for b in np.arange(rng.uniform(0, 60 / hr), 10, 60 / hr):
        x += bump(b, 0.03) * rng.uniform(0.8, 1.6, (8, 1)) + bump(b + 0.16, 0.05) * rng.uniform(0.2, 0.4, (8, 1))
    x += rng.normal(0, 0.03, x.shape)
    np.save(path, x.astype(np.float32))


def make_record(domain:Domain, which:int, rng, media_dir:Path, ident:str) -> Record:
    "One question of `domain` whose cue points to `domain.labels[which]`; its image/ECG written under `media_dir`."
    age, sex = int(rng.integers(20, 90)), ("man", "woman")[int(rng.integers(2))]
    extra = _DISTRACTORS[int(rng.integers(len(_DISTRACTORS)))]
    kw = dict(answer=domain.labels[which], choices=list(domain.labels), domain=domain.name, dataset="synthetic", id=ident)
    if domain.cue == "image":
        p = media_dir / f"{ident}.png"; _write_image(p, which == 0, rng)
        return Record(problem=domain.question, images=[str(p)], **kw)
    if domain.cue == "ecg":
        p = media_dir / f"{ident}.npy"; _write_ecg(p, which == 0, rng)
        return Record(problem=domain.question, time_series=[str(p)], **kw)
    if domain.name == "ehr": text = f"A {age}-year-old {sex} presents with {_EHR_CUES[which]}. {extra} {domain.question}"
    else: text = f"Dermoscopy of a {int(rng.integers(3, 12))} mm lesion on a {age}-year-old {sex} shows {_DERM_CUES[which]}. {domain.question}"
    return Record(problem=text, **kw)


def make_task(media_dir, # where the PNGs and ECGs are written
              n_train:int, # training questions (the stream, in order, skewed by `Domain.share`)
              n_eval:int, # held-out questions per domain (balanced labels)
              n_warm:int=0, # warm-start questions (balanced domains; their answers are replaced by random labels)
              seed:int=0, # the task's seed
              task=TASK) -> tuple[list, list, list]:
    "(training stream, held-out set, warm-start set) of Records; every label of every domain equally likely within a domain."
    media_dir = Path(media_dir); media_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shares = np.array([d.share for d in task]); shares = shares / shares.sum()
    train = [make_record(task[d], int(rng.integers(2)), rng, media_dir, f"train{i}")
             for i, d in enumerate(rng.choice(len(task), size=n_train, p=shares))]
    evals = [make_record(d, i % 2, rng, media_dir, f"eval-{d.name}{i}") for d in task for i in range(n_eval)]
    warm = [make_record(task[i % len(task)], int(rng.integers(2)), rng, media_dir, f"warm{i}") for i in range(n_warm)]
    return train, evals, warm


def _completion(label:str) -> str: return f"{THINK}\\boxed{{{label}}}"


def trl_prompt(record:Record) -> list:
    "The TRL prompt of a record without the long format instruction (`FORMAT_PROMPT`): the warm start teaches the format instead."
    from qoqmed.trl_data import to_trl_prompt
    return to_trl_prompt(build_messages(record, format_prompt=None))


def trl_dataset(records:list):
    "`qoqmed.trl_data.build_trl_dataset` of the records (media checked to exist), with `trl_prompt` prompts."
    from qoqmed.trl_data import build_trl_dataset
    ds, skipped = build_trl_dataset(records, check="exists")
    if skipped: raise RuntimeError(f"{len(skipped)} synthetic records failed to load: {skipped[0].reason}")
    return ds.remove_columns("prompt").add_column("prompt", [trl_prompt(r) for r in records])


def _supervised_loss(model, encs:list, comps:list, pad:int) -> torch.Tensor:
    "Mean token cross-entropy of the completions after their prompts, in one batch: prompts left-padded, completions right-padded (as TRL)."
    from qoqmed.trl_data import collate_media
    P, C = max(len(e["input_ids"]) for e in encs), max(len(c) for c in comps)
    ids = torch.full((len(encs), P + C), pad); am = torch.zeros_like(ids); mm = torch.zeros_like(ids)
    target = torch.full((len(encs), C), -100)
    for j, (e, c) in enumerate(zip(encs, comps)):
        n = len(e["input_ids"])
        ids[j, P - n:P] = torch.tensor(e["input_ids"]); mm[j, P - n:P] = torch.tensor(e["mm_token_type_ids"]); am[j, P - n:P + len(c)] = 1
        ids[j, P:P + len(c)] = torch.tensor(c); target[j, :len(c)] = torch.tensor(c)
    out = model(input_ids=ids, attention_mask=am, mm_token_type_ids=mm, **collate_media([e["media"] for e in encs]),
                logits_to_keep=C + 1, use_cache=False)
    return torch.nn.functional.cross_entropy(out.logits[:, :-1].float().reshape(-1, out.logits.size(-1)), target.reshape(-1), ignore_index=-100)


def _noisy_label(record:Record, accuracy:float, rng) -> str:
    "The true label with probability `accuracy`, else one of the other choices (uniformly)."
    if rng.random() < accuracy: return record.answer
    others = [c for c in record.choices if c != record.answer]
    return others[int(rng.integers(len(others)))]


def warm_start(model, processor, records:list, # warm-start questions
               steps:int, # optimizer steps
               batch:int=8, # questions per step
               lr:float=1e-3, # AdamW learning rate
               seed:int=0, # draws the random labels and the order
               label_accuracy:float=0.5, # probability that a supervised label is the true one (0.5: labels uniform, the policy at chance)
               log_every:int=0, # print the loss every this many steps (0: never)
              ) -> list[float]:
    "Supervised warm start: `THINK + \\boxed{label}<|im_end|>`, the label right with probability `label_accuracy` (0.5: uniform)."
    from qoqmed.trl_data import encode_prompt
    rng = np.random.default_rng(seed + 1000)
    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    encoded = [encode_prompt(processor, trl_prompt(r)) for r in records]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)   # linear to 0: a sharp format at the end
    model.train()
    losses = []
    for step in range(steps):
        idx = rng.choice(len(records), size=batch, replace=False)
        labels = [_noisy_label(records[i], label_accuracy, rng) for i in idx]
        loss = _supervised_loss(model, [encoded[i] for i in idx], [tok(_completion(l), add_special_tokens=False)["input_ids"] + [end] for l in labels], tok.pad_token_id)
        opt.zero_grad(); loss.backward(); opt.step(); decay.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0: print(f"  warm start step {step + 1}: loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    model.eval()
    return losses


def evaluate(model, processor, records:list, # held-out questions
             samples:int=4, # answers sampled per question (temperature 1, fixed seed); 0: one greedy answer
             batch:int=32, # answers per generation batch
             max_new_tokens:int=18, # most tokens per answer
             seed:int=0, # sampling seed
             temperature:float=1.0, # sampling temperature (the trainer's)
            ) -> dict:
    "Sampled (or greedy) answers to `records`: per-domain accuracy and macro-F1 over all answers (`qoqmed.metrics.domain_metrics`), scored by `clinical_reward`."
    from qoqmed.evaluate import ModelGenerator
    from qoqmed.metrics import domain_metrics
    class Generator(ModelGenerator):
        def prompts(self, records): return [self.processor.apply_chat_template(build_messages(r, format_prompt=None), add_generation_prompt=True, tokenize=False) for r in records]
    was_training = model.training
    model.eval()
    gen = Generator(model, processor, max_new_tokens=max_new_tokens, do_sample=samples > 0, seed=seed, temperature=temperature)
    records = [r for r in records for _ in range(max(samples, 1))]
    traces, examples = [], []
    try:
        for s in range(0, len(records), batch):
            recs = records[s:s + batch]
            with inverse_cdf_sampling(), torch.random.fork_rng(devices=[]): _, completions = gen(recs, [load_inputs(r) for r in recs])
            for r, c in zip(recs, completions):
                score = rewards.clinical_reward(c, r.answer, choices=r.choices)
                traces.append(dict(domain=r.domain, status="ok", parsed=dict(answer=rewards.parse_completion(c).answer),
                                   truth=dict(answer=r.answer, choices=r.choices), reward=score))
                if len(examples) < 8: examples.append(c)
    finally:
        if was_training: model.train()
    rows = domain_metrics(traces)
    return dict(rows=[{k: r[k] for k in ("domain", "n", "accuracy", "macro_f1", "mean_reward")} for r in rows], examples=examples)


class inverse_cdf_sampling:
    """Within the block, `torch.multinomial(probs, 1)` on a CPU draws by inverse CDF (one uniform per row) instead of one exponential
    per vocabulary entry: the same categorical distribution, ~10x cheaper over Qwen's 151,680 tokens (multinomial was a third of a step)."""
    def __enter__(self):
        self.original = torch.multinomial
        def multinomial(probs, num_samples, replacement=False, *, generator=None, out=None):
            if num_samples != 1 or probs.dim() != 2 or probs.device.type != "cpu" or out is not None:
                return self.original(probs, num_samples, replacement, generator=generator, out=out)
            cdf = probs.float().cumsum(-1)   # float32 rounding of the running sum: ~1e-5 of probability at most in practice
            u = torch.rand(probs.size(0), 1, generator=generator) * cdf[:, -1:]
            return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.size(-1) - 1)
        torch.multinomial = multinomial
        return self
    def __exit__(self, *exc): torch.multinomial = self.original


class _EvalCallback:
    "Evaluate the policy on the held-out set every `every` optimizer steps (and at the last step)."
    def __new__(cls, *a, **k):
        from transformers import TrainerCallback
        class EvalCallback(TrainerCallback):
            def __init__(self, processor, records, every, temperature):
                self.processor, self.records, self.every, self.temperature, self.curve, self.trainer = processor, records, every, temperature, [], None
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step % self.every == 0 or state.global_step == state.max_steps:
                    model = self.trainer.accelerator.unwrap_model(self.trainer.model)
                    res = evaluate(model, self.processor, self.records, temperature=self.temperature)
                    self.curve.append(dict(step=state.global_step, **_by_domain(res)))
        return EvalCallback(*a, **k)


def _by_domain(res:dict) -> dict:
    "{domain: {accuracy, macro_f1, mean_reward}} of an `evaluate` result (with its `mean` row)."
    return {r["domain"]: {k: r[k] for k in ("accuracy", "macro_f1", "mean_reward")} for r in res["rows"] if r["domain"] != "all"}


def run_algo(algo:str, warm_dir, processor, train_records:list, eval_records:list,
             steps:int, # optimizer steps
             seed:int=0, # trainer seed (sampling); the question stream is `train_records` in order
             questions:int=8, # questions per step
             generations:int=4, # rollouts per question
             lr:float=2e-3, # learning rate (AdamW, constant; TRL's defaults otherwise)
             beta:float=0.01, # KL coefficient (the reference is the warm-started model)
             eval_every:int=10, # evaluate every this many steps
             temperature:float=0.7, # sampling temperature of the rollouts (and of the held-out answers)
             out_dir=None, # the trainer's output folder (default: a temporary one)
            ) -> dict:
    "Train the warm-started tiny QoQ-Med with `algo` through `QoQMedGRPOTrainer`; the held-out curve, the trainer's log and the wall time."
    from qoqmed.trainer import QoQMedGRPOTrainer, tiny_run_config
    from qoqmed.recipes import library_notices_filtered
    from qoqmed.model import QoQMedForConditionalGeneration
    model = QoQMedForConditionalGeneration.from_pretrained(str(warm_dir))   # the reference policy is reloaded from here too
    ds = trl_dataset(train_records[:steps * questions])
    out = Path(out_dir or tempfile.mkdtemp(prefix=f"drpo-trainer-{algo}-"))
    args = tiny_run_config(out, steps=steps, algo=algo, seed=seed, per_device_train_batch_size=questions * generations,
                           num_generations=generations, max_completion_length=18, learning_rate=lr, beta=beta,
                           shuffle_dataset=False, completions_trace=False, lr_scheduler_type="constant", warmup_steps=0,
                           temperature=temperature)
    cb = _EvalCallback(processor, eval_records, eval_every, temperature)
    trainer = QoQMedGRPOTrainer(model, args=args, train_dataset=ds, processing_class=processor, callbacks=[cb])
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)   # no log dict per step on stdout
    cb.trainer = trainer
    t0 = time.perf_counter()
    with library_notices_filtered(), inverse_cdf_sampling(): trainer.train()
    wall = time.perf_counter() - t0
    logs = [{k: v for k, v in row.items() if k == "step" or k.startswith("domain/") or k in ("reward", "loss", "kl")}
            for row in trainer.state.log_history]
    return dict(algo=algo, seed=seed, curve=cb.curve, log=logs, wall_s=wall)


# ---------------------------------------------------------------------------------------------------------------- orchestration
_PROCESSOR = None

def _processor():
    "The tiny QoQ-Med processor, built once per process (the Qwen tokenizer takes seconds to build)."
    global _PROCESSOR
    if _PROCESSOR is None: _PROCESSOR = tiny_qoqmed(seed=0)[1]
    return _PROCESSOR


def _worker_init():
    torch.set_num_threads(1)
    import logging, warnings
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()
    logging.getLogger("qoqmed.train").setLevel(logging.ERROR)


def warm_job(seed:int, warm_records:list, eval_records:list, warm_dir:str, steps:int, lr:float, label_accuracy:float, temperature:float) -> dict:
    "Warm-start the tiny model of `seed` and save it to `warm_dir`; its held-out scores (the step-0 point of every curve)."
    _worker_init()
    t0 = time.perf_counter()
    model, processor = tiny_qoqmed(seed=seed)
    losses = warm_start(model, processor, warm_records, steps=steps, lr=lr, seed=seed, label_accuracy=label_accuracy)
    model.save_pretrained(warm_dir); processor.save_pretrained(warm_dir)
    res = evaluate(model, processor, eval_records, temperature=temperature)
    return dict(seed=seed, loss=float(np.mean(losses[-10:])), eval=_by_domain(res), example=res["examples"][0], wall_s=time.perf_counter() - t0)


def rl_job(algo:str, seed:int, warm_dir:str, train_records:list, eval_records:list, kw:dict) -> dict:
    "One RL run (see `run_algo`) in a worker process."
    _worker_init()
    t0 = time.perf_counter()
    out = run_algo(algo, warm_dir, _processor(), train_records, eval_records, seed=seed, out_dir=Path(warm_dir).parent / algo, **kw)
    out["job_wall_s"] = time.perf_counter() - t0
    return out


def _pool(jobs:int):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))


def run_benchmark(seeds:int=3, steps:int=40, questions:int=8, generations:int=4, lr:float=2e-3, beta:float=0.01, temperature:float=0.7,
                  warm_steps:int=250, warm_lr:float=4e-3, label_accuracy:float=0.75, n_warm:int=200, n_eval:int=16, eval_every:int=10,
                  algos=ALGOS, jobs:int=2, work_dir=None, verbose:bool=True) -> dict:
    "Every (seed, algorithm) run: warm starts first (in parallel), then the RL runs (in parallel); the raw results."
    work = Path(work_dir or tempfile.mkdtemp(prefix="drpo-trainer-"))
    say = print if verbose else (lambda *a, **k: None)
    t0 = time.perf_counter()
    tasks = {s: make_task(work / f"seed{s}" / "media", steps * questions, n_eval, n_warm, seed=s) for s in range(seeds)}
    kw = dict(steps=steps, questions=questions, generations=generations, lr=lr, beta=beta, eval_every=eval_every, temperature=temperature)
    with _pool(jobs) as pool:
        warm = {s: pool.submit(warm_job, s, tasks[s][2], tasks[s][1], str(work / f"seed{s}" / "warm"), warm_steps, warm_lr,
                                  label_accuracy, temperature) for s in tasks}
        warm = {s: f.result() for s, f in warm.items()}
        for s, w in warm.items():
            say(f"seed {s}: warm start {warm_steps} steps, final loss {w['loss']:.4f}, held-out accuracy "
                + ", ".join(f"{d} {v['accuracy']:.2f}" for d, v in w["eval"].items() if d != "mean") + f" ({w['wall_s']:.0f} s)", flush=True)
        runs = {(a, s): pool.submit(rl_job, a, s, str(work / f"seed{s}" / "warm"), tasks[s][0], tasks[s][1], kw) for s in tasks for a in algos}
        results = []
        for (a, s), f in runs.items():
            r = f.result()
            r["curve"] = [dict(step=0, **warm[s]["eval"])] + r["curve"]
            last = r["curve"][-1]
            say(f"seed {s} {a:17s}: {r['wall_s']:.0f} s; final held-out macro-F1 "
                + ", ".join(f"{d} {v['macro_f1']:.2f}" for d, v in last.items() if d != "step"), flush=True)
            results.append(r)
    return dict(results=results, warm=list(warm.values()), wall_s=time.perf_counter() - t0, settings=dict(seeds=seeds, **kw,
                warm_steps=warm_steps, warm_lr=warm_lr, label_accuracy=label_accuracy, n_warm=n_warm, n_eval=n_eval, jobs=jobs, algos=list(algos)))


# ---------------------------------------------------------------------------------------------------------------- report
def _mean_se(x) -> tuple[float, float]:
    x = np.asarray(x, float); x = x[~np.isnan(x)]
    if len(x) == 0: return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def _fmt(m, s, signed=False) -> str:
    if math.isnan(m): return "—"
    return (f"{m:+.3f}" if signed else f"{m:.3f}") + (f" ± {s:.3f}" if s > 0 else "")


def final_scores(results:list, metric:str="macro_f1", algos=ALGOS, task=TASK) -> dict:
    "{algo: {domain or 'mean': [value per seed]}} at the last held-out evaluation, seeds in order."
    out = {}
    for a in algos:
        rs = sorted((r for r in results if r["algo"] == a), key=lambda r: r["seed"])
        out[a] = {d: [r["curve"][-1][d][metric] for r in rs] for d in [t.name for t in task] + ["mean"]}
    return out


def _warm_scores(warm:list, metric:str, task=TASK) -> dict:
    ws = sorted(warm, key=lambda w: w["seed"])
    return {d: [w["eval"][d][metric] for w in ws] for d in [t.name for t in task] + ["mean"]}


def score_table(results:list, warm:list, metric:str="macro_f1", algos=ALGOS, task=TASK) -> str:
    "Markdown: held-out `metric` per domain and the mean over domains, mean ± s.e. over seeds; the warm start's first."
    cols = [t.name for t in task] + ["mean"]
    head = ["| | " + " | ".join(f"{t.name} ({100 * t.share:.0f}%)" for t in task) + " | mean over domains |", "|---|" + "---:|" * len(cols)]
    rows = [f"| warm start (step 0) | " + " | ".join(_fmt(*_mean_se(v)) for v in _warm_scores(warm, metric, task).values()) + " |"]
    fs = final_scores(results, metric, algos, task)
    for a in algos: rows.append(f"| {a} | " + " | ".join(_fmt(*_mean_se(fs[a][d])) for d in cols) + " |")
    return "\n".join(head + rows)


def difference_table(results:list, metric:str="macro_f1", algos=ALGOS, task=TASK) -> str:
    "Markdown: each DRPO variant minus GRPO, paired by seed, mean ± s.e. over seeds."
    cols = [t.name for t in task] + ["mean"]
    fs = final_scores(results, metric, algos, task)
    head = ["| vs grpo | " + " | ".join(f"{t.name} ({100 * t.share:.0f}%)" for t in task) + " | mean over domains |", "|---|" + "---:|" * len(cols)]
    rows = []
    for a in algos:
        if a == "grpo": continue
        rows.append(f"| {a} − grpo | " + " | ".join(_fmt(*_mean_se(np.subtract(fs[a][d], fs["grpo"][d])), signed=True) for d in cols) + " |")
    return "\n".join(head + rows)


def reward_series(result:dict, domain:str) -> tuple[np.ndarray, np.ndarray]:
    "(steps, rewards) of the trainer's `domain/<d>/reward` log of one run (steps where the domain was in the batch)."
    pts = [(row["step"], row[f"domain/{domain}/reward"]) for row in result["log"] if row.get(f"domain/{domain}/reward") is not None]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts], float)


def training_reward_table(results:list, algos=ALGOS, task=TASK, last:float=0.5) -> str:
    "Markdown: the trainer's mean reward per domain over the last `last` of the steps, mean ± s.e. over seeds."
    head = ["| training reward, last half of the steps | " + " | ".join(t.name for t in task) + " |", "|---|" + "---:|" * len(task)]
    rows = []
    for a in algos:
        cells = []
        for t in task:
            vals = []
            for r in (r for r in results if r["algo"] == a):
                st, rw = reward_series(r, t.name)
                top = max((row["step"] for row in r["log"] if "step" in row), default=0)
                keep = st > top * (1 - last)
                vals.append(rw[keep].mean() if keep.any() else float("nan"))
            cells.append(_fmt(*_mean_se(vals)))
        rows.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(head + rows)


def plot(results:list, warm:list, path, algos=ALGOS, task=TASK, window:int=5) -> Path:
    "Per domain: held-out accuracy over the steps (top) and the trainer's domain reward (bottom, rolling mean), mean ± s.e. over seeds."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(task), figsize=(3.6 * len(task), 6.2), sharex=True, squeeze=False)
    colours = dict(zip(ALGOS, ("#1f77b4", "#ff7f0e", "#2ca02c")))
    for j, t in enumerate(task):
        for a in algos:
            rs = sorted((r for r in results if r["algo"] == a), key=lambda r: r["seed"])
            if not rs: continue
            steps = [c["step"] for c in rs[0]["curve"]]
            acc = np.array([[c[t.name]["accuracy"] for c in r["curve"]] for r in rs])
            m, s = acc.mean(0), (acc.std(0, ddof=1) / math.sqrt(len(rs)) if len(rs) > 1 else np.zeros(len(steps)))
            ax = axes[0, j]; ax.plot(steps, m, marker="o", ms=3, color=colours[a], label=a); ax.fill_between(steps, m - s, m + s, color=colours[a], alpha=0.2)
            top = max(row["step"] for row in rs[0]["log"] if "step" in row)
            grid = np.arange(1, top + 1)
            curves = []
            for r in rs:   # a step without the domain in its batch carries the last value forward; then a rolling mean
                st, rw = reward_series(r, t.name)
                if len(st) == 0: continue
                filled = np.array([rw[st <= g][-1] if (st <= g).any() else np.nan for g in grid])
                curves.append(np.array([np.nanmean(filled[max(0, i - window + 1):i + 1]) for i in range(len(grid))]))
            if curves:
                c = np.array(curves); m = np.nanmean(c, 0); s = np.nanstd(c, 0, ddof=1) / math.sqrt(len(c)) if len(c) > 1 else np.zeros_like(m)
                ax = axes[1, j]; ax.plot(grid, m, color=colours[a]); ax.fill_between(grid, m - s, m + s, color=colours[a], alpha=0.2)
        axes[0, j].set_title(f"{t.name} ({100 * t.share:.0f}% of training, {t.cue} cue)", fontsize=9)
        axes[0, j].axhline(0.5, color="grey", lw=0.8, ls=":"); axes[0, j].set_ylim(0, 1.05); axes[1, j].set_xlabel("RL step")
    axes[0, 0].set_ylabel("held-out accuracy (4 samples/question)"); axes[1, 0].set_ylabel(f"training reward (rolling {window})")
    axes[0, 0].legend(fontsize=8, loc="lower right")
    n = len({r["seed"] for r in results})
    fig.suptitle(f"QoQMedGRPOTrainer on the synthetic 4-domain task: mean ± s.e. over {n} seed{'s' if n != 1 else ''}", fontsize=10)
    fig.tight_layout(); fig.savefig(path, dpi=90); plt.close(fig)
    return Path(path)


def report(bench:dict, out_dir, png_name:str="drpo_trainer.png") -> str:
    "Print-ready markdown of a `run_benchmark` result; writes the figure and the raw JSON into `out_dir`."
    out = Path(out_dir); out.mkdir(parents=True, exist_ok=True)
    res, warm, st = bench["results"], bench["warm"], bench["settings"]
    algos = [a for a in ALGOS if a in st["algos"]]
    png = plot(res, warm, out / png_name, algos)
    (out / Path(png_name).with_suffix(".json").name).write_text(json.dumps(bench, indent=1, default=float))
    walls = {a: [r["wall_s"] for r in res if r["algo"] == a] for a in algos}
    lines = [f"### held-out macro-F1 after {st['steps']} RL steps (mean ± s.e. over {st['seeds']} seeds; {st['n_eval']} questions per domain)", "",
             score_table(res, warm, "macro_f1", algos), "", "paired difference vs GRPO (same seed, same warm start, same question stream)", "",
             difference_table(res, "macro_f1", algos), "", "### held-out accuracy", "", score_table(res, warm, "accuracy", algos), "",
             difference_table(res, "accuracy", algos), "", "### trainer's per-domain reward (domain/<d>/reward)", "", training_reward_table(res, algos), "",
             "wall time per RL run: " + ", ".join(f"{a} {np.mean(w):.0f} s ({np.mean(w) / st['steps']:.1f} s/step)" for a, w in walls.items())
             + f"; warm starts {np.mean([w['wall_s'] for w in warm]):.0f} s each; total {bench['wall_s']:.0f} s with {st['jobs']} parallel job(s)",
             f"figure: {png}"]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="RL optimizer steps per run")
    ap.add_argument("--questions", type=int, default=8, help="questions per RL step")
    ap.add_argument("--generations", type=int, default=4, help="rollouts per question")
    ap.add_argument("--lr", type=float, default=2e-3, help="RL learning rate (AdamW, constant)")
    ap.add_argument("--beta", type=float, default=0.01, help="KL coefficient")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of rollouts and held-out answers")
    ap.add_argument("--warm-steps", type=int, default=250)
    ap.add_argument("--label-accuracy", type=float, default=0.75, help="share of warm-start labels that are right (0.5: uniform)")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--n-eval", type=int, default=16, help="held-out questions per domain (4 sampled answers each)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel worker processes (1 thread each)")
    ap.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    ap.add_argument("--out", default=str(Path(__file__).parent), help="where drpo_trainer.png/.json go")
    ap.add_argument("--work", default=None, help="folder for media, warm starts and runs (default: a temporary one)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 2 RL steps, a tiny warm start and held-out set")
    a = ap.parse_args(argv)
    if a.quick:
        a.seeds, a.steps, a.questions, a.warm_steps, a.eval_every, a.n_eval, a.jobs = 1, 2, 4, 4, 2, 2, 1
        if a.out == str(Path(__file__).parent): a.out = tempfile.mkdtemp(prefix="drpo-trainer-quick-")
    _worker_init()
    import platform
    load0 = os.getloadavg()
    print(f"DRPO vs GRPO through QoQMedGRPOTrainer: {a.seeds} seed(s) x {len(a.algos)} algorithms, {a.steps} RL steps of "
          f"{a.questions} questions x {a.generations} rollouts; warm start {a.warm_steps} steps (format; labels right {a.label_accuracy:.0%} of the time); "
          f"{a.jobs} job(s); {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load average {load0[0]:.1f}", flush=True)
    bench = run_benchmark(a.seeds, a.steps, a.questions, a.generations, a.lr, a.beta, a.temperature, a.warm_steps,
                          label_accuracy=a.label_accuracy, n_eval=a.n_eval,
                          eval_every=a.eval_every, algos=a.algos, jobs=a.jobs, work_dir=a.work)
    bench["load_average"] = dict(start=load0, end=os.getloadavg())
    print("\n" + report(bench, a.out))
    print(f"load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}; total wall {bench['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
