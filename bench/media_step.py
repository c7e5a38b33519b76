"""Main-process media time of a training step, with media decoded in the main process (`dataloader_num_workers=0`) and in two
DataLoader workers (`MediaEncodingCollator`, nbs/09_trainer.ipynb "Media decoding off the training loop"), side by side.

The tiny random QoQ-Med (`tiny_run_config`) trains a few steps on the demo data scaled up: its 14 questions repeated over
distinct copies of their files (so no file is read from the page cache twice within a copy), the photographs enlarged to
3072 x 3072 so decoding costs what a clinical image costs, and the multi-frame DICOM and NIfTI volumes kept. Prints, per setting,
the main process's seconds per step spent loading/encoding media (`media/main_process_s`), waiting on the DataLoader
(`media/dataloader_wait_s`), and the step wall time; the ratio; and whether both runs gave the same losses.

    python bench/media_step.py            # 6 steps, 4 questions a step, 8 copies of the demo data
    python bench/media_step.py --quick    # 3 steps of 2 questions, 2 copies: a smoke test (about a minute on 2 cores)

Random weights and a tiny model: the step is short, so the media share is larger than on a 7B model; what carries over is
the main-process seconds per step that the workers take away.
"""
from __future__ import annotations
import argparse, contextlib, io, json, os, shutil, statistics, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BIG = ("fundus/skimage/retina.jpg", "pathology/skimage/ihc.jpg", "chest_xray/pydicom-data/RG1_UNCR.png", "fundus/hrf/microaneurysms.png")


def scaled_demo(out:Path, copies:int, side:int=3072) -> Path:
    "A JSONL of the demo questions repeated over `copies` copies of their files, photographs enlarged to `side` px."
    from PIL import Image
    from qoqmed.demo import DEMO_DIR, DEMO_DATA
    rows = [json.loads(l) for l in DEMO_DATA.read_text().splitlines() if l.strip()]
    lines = []
    is_file = lambda v: (DEMO_DIR / v).is_file() or (DEMO_DIR / f"{v}.hea").is_file()
    for c in range(copies):
        dest = out / f"copy{c}"
        shutil.copytree(DEMO_DIR, dest, ignore=shutil.ignore_patterns("*.jsonl", "__pycache__"))
        for rel in BIG:
            with Image.open(dest / rel) as im: big = im.convert("RGB").resize((side, side), Image.BICUBIC)
            big.save(dest / rel, quality=95) if rel.endswith(".jpg") else big.save(dest / rel)
        for r in rows:
            r = dict(r, id=f"{r['id']}-{c}")
            for key, v in r.items():   # every media path (images, videos, time series, masks), relative to the JSONL
                if isinstance(v, str) and is_file(v): r[key] = f"copy{c}/{v}"
                elif isinstance(v, list) and v and all(isinstance(x, str) and is_file(x) for x in v): r[key] = [f"copy{c}/{x}" for x in v]
            lines.append(json.dumps(r))
    path = out / "scaled.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(jsonl:Path, out:Path, workers:int, steps:int, questions:int, completion:int):
    "Train `steps` steps; (log rows of the steps, step wall times in s, losses)."
    from transformers import TrainerCallback
    from qoqmed.model import tiny_qoqmed
    from qoqmed.trainer import QoQMedGRPOTrainer, tiny_run_config, toy_text_reward
    from qoqmed.trl_data import build_trl_dataset
    ds, _ = build_trl_dataset(jsonl, check="none")
    model, processor = tiny_qoqmed(seed=0)
    args = tiny_run_config(out, steps=steps, reward_weights=[1.0], per_device_train_batch_size=4 * questions,
                           dataloader_num_workers=workers, completions_trace=False, max_frames=8,
                           max_completion_length=completion)
    ends = []
    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k): ends.append(time.perf_counter())
        def on_step_end(self, *a, **k): ends.append(time.perf_counter())
    t = QoQMedGRPOTrainer(model, reward_funcs=[toy_text_reward], args=args, train_dataset=ds, processing_class=processor,
                          callbacks=[Clock()])
    with contextlib.redirect_stdout(io.StringIO()): t.train()   # transformers prints each log row
    logs = [h for h in t.state.log_history if "loss" in h]
    return logs, [b - a for a, b in zip(ends, ends[1:])], [h["loss"] for h in logs]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 steps of 2 questions, 2 copies of the demo data (a smoke test)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--copies", type=int, default=None)
    p.add_argument("--questions", type=int, default=4, help="distinct questions a step (x 4 rollouts)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--completion", type=int, default=8, help="completion tokens: short, so the step is not all generation")
    a = p.parse_args(argv)
    steps, copies = a.steps or (3 if a.quick else 6), a.copies or (2 if a.quick else 8)
    questions = 2 if a.quick else a.questions
    import logging, transformers, datasets
    transformers.logging.set_verbosity_error(); datasets.disable_progress_bars()
    logging.getLogger("qoqmed.train").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jsonl = scaled_demo(tmp / "data", copies)
        res = {w: run(jsonl, tmp / f"run{w}", w, steps, questions, a.completion) for w in (0, a.workers)}
    # the first step pays for worker start-up and the first batch of every run; the steady state is the steps after it
    steady = lambda xs: xs[1:] if len(xs) > 1 else xs
    table = {}
    print(f"{steps} steps x {questions} questions (x 4 rollouts) on {copies} copies of the demo data; "
          f"means over steps 2..{steps} (step 1 in brackets)")
    print(f"{'workers':>8} {'main-process media s/step':>27} {'dataloader wait s/step':>24} {'step wall s':>12}")
    for w, (logs, walls, _) in res.items():
        media = [h["media/main_process_s"] for h in logs]; wait = [h["media/dataloader_wait_s"] for h in logs]
        table[w] = dict(media=statistics.mean(steady(media)), wait=statistics.mean(steady(wait)), wall=statistics.mean(steady(walls)))
        print(f"{w:>8} {table[w]['media']:>18.3f} ({media[0]:.3f}) {table[w]['wait']:>15.3f} ({wait[0]:.3f}) "
              f"{table[w]['wall']:>6.2f} ({walls[0]:.2f})")
    w = a.workers
    ratio = table[0]["media"] / max(table[w]["media"], 1e-6)
    print(f"main-process media time, 0 -> {w} workers: {table[0]['media']:.3f} -> {table[w]['media']:.3f} s/step "
          f"({'x%.0f less' % ratio if table[w]['media'] > 0 else 'all of it moved to the workers'}); "
          f"step wall time {table[0]['wall']:.2f} -> {table[w]['wall']:.2f} s ({table[0]['wall'] / table[w]['wall']:.2f}x)")
    same = res[0][2] == res[w][2]
    print(f"same losses with 0 and {w} workers: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
