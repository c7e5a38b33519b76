"""Benchmark of `qoqmed.rewards`: completions per second of `clinical_reward` with a 512 x 512 mask and 1-3 boxes per
completion, side by side with a straightforward version that rasterises every box into a full-size mask (what the
official QoQ-Med reward does), on one core. Also: IoU alone, the TRL functions, and parse time on adversarial input
(linear up to MAX_COMPLETION_CHARS = 65,536 characters, flat beyond: an over-long completion is read in its head and tail).

    python bench/rewards.py            # about a minute
    python bench/rewards.py --quick    # a few seconds, for smoke tests
"""
import os
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[var] = "1"  # one core: set before numpy is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse, platform, subprocess, sys, time
import numpy as np

from qoqmed.rewards import (MaskIntegral, parse_completion, accuracy_reward, format_reward, length_reward, combine,
    boxes_to_original, boxes_to_model, clinical_reward, PAPER_WEIGHTS, mask_integral_from_path, PAPER_REWARD_FUNCS,
    PAPER_REWARD_WEIGHTS, iou_reward_func, _pixel_span, _parse_cached, MAX_COMPLETION_CHARS)

SIZE = (512, 512)  # original (width, height); the model sees 504 x 504
G = 8              # rollouts per question

def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except Exception: return platform.processor() or "unknown"

def make_workload(n_questions:int, seed:int=0):
    "n_questions 512x512 lesion masks, G completions each with 1-3 boxes (in model pixels) around the lesion."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE[1], :SIZE[0]]
    words = ("the right costophrenic angle is blunted with a meniscus sign consistent with pleural fluid while the "
             "cardiac silhouette and mediastinum are within normal limits and there is no pneumothorax").split()
    questions = []
    for q in range(n_questions):
        cx, cy, rx, ry = rng.uniform(120, 390), rng.uniform(120, 390), rng.uniform(30, 110), rng.uniform(30, 110)
        mask = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8) * 255   # as read from a PNG
        truth = ["pleural effusion", "cardiomegaly, pleural effusion", "pneumothorax"][q % 3]
        completions = []
        for _ in range(G):
            boxes = []
            for _ in range(int(rng.integers(1, 4))):
                jitter = rng.normal(0, 15, 4)
                boxes.append([cx - rx + jitter[0], cy - ry + jitter[1], cx + rx + jitter[2], cy + ry + jitter[3]])
            model_boxes = boxes_to_model(boxes, SIZE)
            items = ", ".join(f'{{"bbox_2d": [{", ".join(str(int(round(v))) for v in b)}], "label": "pleural effusion"}}' for b in model_boxes)
            think = " ".join(rng.choice(words, int(rng.integers(60, 160))))
            answer = ["Pleural effusion", "pleural effusion and cardiomegaly", "Pneumothorax", "\\text{Effusion}"][int(rng.integers(0, 4))]
            completions.append(f"<think>{think}</think>\n```json\n[{items}]\n```\n\\boxed{{{answer}}}")
        questions.append((mask, truth, completions))
    return questions

# --- the straightforward version: same parsing and scoring, IoU by rasterising each box over the whole mask ---------
def raster_iou(mask, boxes):
    "Per box: draw it into a full-size float mask, then count intersection and union over every pixel."
    if mask.sum() == 0: return None       # "not none and not all zero", checked on every call as the official code does
    seg = (mask > 0).astype(np.float32)   # binarised on every call, as the official code does
    h, w = seg.shape
    best = 0.0
    for b in boxes:
        c0, c1 = _pixel_span(b[0], b[2], w); r0, r1 = _pixel_span(b[1], b[3], h)
        box = np.zeros((h, w), dtype=np.float32)
        box[r0:r1, c0:c1] = 1.0
        inter = float((box * seg).sum())
        union = float(np.clip(box + seg, 0, 1).sum())
        best = max(best, inter / union if union > 0 else 0.0)
    return best

def straightforward_clinical_reward(text, truth, mask):
    p = parse_completion(text)
    fmt, length = format_reward(p), length_reward(p)
    boxes = boxes_to_original(p.boxes, (mask.shape[1], mask.shape[0]))
    comp = {"accuracy": accuracy_reward(p.answer, truth), "iou": raster_iou(mask, boxes) if boxes else 0.0,
            "aux": (fmt + length) / 2}
    return combine(comp, PAPER_WEIGHTS)

# --- timing -------------------------------------------------------------------------------------------------------
def rates(fns:dict, n_items:int, min_seconds:float, repeats:int=3) -> dict:
    "Best items/second of each function over `repeats` rounds; the functions take turns within a round, so load on the machine hits all alike."
    best = {k: 0.0 for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0, done = time.perf_counter(), 0
            while True:
                fn(); done += n_items
                dt = time.perf_counter() - t0
                if dt >= min_seconds: break
            best[k] = max(best[k], done / dt)
    return best

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    args = ap.parse_args(argv)
    secs, n_q = (0.3, 4) if args.quick else (2.0, 16)

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs visible, benchmark pinned to 1 thread (OMP/MKL/OpenBLAS=1)")
    print(f"python {platform.python_version()}, numpy {np.__version__}\n")
    questions = make_workload(n_q)
    items = [(text, truth, mask) for mask, truth, comps in questions for text in comps]
    n = len(items)
    n_boxes = sum(len(parse_completion(t).boxes) for t, _, _ in items)
    print(f"workload: {n_q} questions x {G} rollouts = {n} completions, 512x512 masks, {n_boxes / n:.2f} boxes per completion on average")

    # results agree exactly
    integrals = [MaskIntegral(m) for m, _, _ in questions]
    ours_vals = [clinical_reward(t, tr, mask=integrals[i // G])["overall"] for i, (t, tr, _) in enumerate(items)]
    slow_vals = [straightforward_clinical_reward(t, tr, m) for t, tr, m in items]
    assert np.allclose(ours_vals, slow_vals, atol=1e-12), "the two implementations disagree"
    print(f"check: both implementations give the same rewards on all {n} completions (max |diff| {np.max(np.abs(np.subtract(ours_vals, slow_vals))):.1e})\n")

    def ours_cached():      # steady state: the summed-area table of each question's mask is already cached
        for i, (t, tr, _) in enumerate(items): clinical_reward(t, tr, mask=integrals[i // G])
    def ours_cold():        # the table built once per question (G rollouts share it), from the raw uint8 mask
        for q, (m, tr, comps) in enumerate(questions):
            mi = MaskIntegral(m)
            for t in comps: clinical_reward(t, tr, mask=mi)
    def straightforward():
        for t, tr, m in items: straightforward_clinical_reward(t, tr, m)
    def builds():           # the table builds alone (one per question)
        for m, _, _ in questions: MaskIntegral(m)

    # the TRL functions over a batch (paper set: accuracy, iou, aux), mask files read through the cached loader
    masks_by_path = {f"q{q}.png": m for q, (m, _, _) in enumerate(questions)}
    batch = dict(prompts=["q"] * n, completions=[[{"role": "assistant", "content": t}] for t, _, _ in items],
                 answer=[tr for _, tr, _ in items], segmentation_path=[f"q{i // G}.png" for i in range(n)],
                 image_size=[SIZE] * n, bbox=[None] * n)
    loader = masks_by_path.__getitem__
    funcs = [PAPER_REWARD_FUNCS[0], lambda **kw: iou_reward_func(mask_loader=loader, **kw), PAPER_REWARD_FUNCS[2]]
    mask_integral_from_path.cache_clear()
    def trl_batch():        # new completions every batch: the parse cache starts empty, the mask cache is warm
        _parse_cached.cache_clear()
        for f in funcs: f(**batch)

    # IoU alone
    mapped = [boxes_to_original(parse_completion(t).boxes, SIZE) for t, _, _ in items]
    def iou_ours():
        for i, bs in enumerate(mapped):
            mi = integrals[i // G]; max(mi.iou(b) for b in bs)
    def iou_slow():
        for i, bs in enumerate(mapped): raster_iou(questions[i // G][0], bs)

    r = rates(dict(cached=ours_cached, cold=ours_cold, slow=straightforward, trl=trl_batch, iou=iou_ours, iou_slow=iou_slow, build=builds), n, secs)
    r_cached, r_cold, r_slow, r_trl, r_iou, r_iou_slow = (r[k] for k in ("cached", "cold", "slow", "trl", "iou", "iou_slow"))
    build_us = 1e6 * G / r["build"]   # rates count G items per question
    rows = [("clinical_reward, mask table cached (steady state)", r_cached),
            ("clinical_reward, mask table built once per question", r_cold),
            ("straightforward: rasterise every box", r_slow)]

    w = max(len(r[0]) for r in rows) + 2
    print(f"{'end to end (parse + F1 + IoU + aux), one core':{w}} {'completions/s':>14} {'x straightforward':>18}")
    for name, r in rows: print(f"{name:{w}} {r:14,.0f} {r / r_slow:18.1f}")
    print(f"{'TRL functions (accuracy, iou, aux) on a batch, masks via path cache':{w}} {r_trl:14,.0f} {r_trl / r_slow:18.1f}")
    print(f"\n{'IoU alone (1-3 boxes vs 512x512 mask)':{w}} {'completions/s':>14} {'x straightforward':>18}")
    print(f"{'summed-area table, O(1) per box':{w}} {r_iou:14,.0f} {r_iou / r_iou_slow:18.1f}")
    print(f"{'rasterise every box':{w}} {r_iou_slow:14,.0f} {1.0:18.1f}")

    # where a fresh question's time goes (microseconds per question of G rollouts)
    slow_q, cached_q, cold_q = 1e6 * G / r_slow, 1e6 * G / r_cached, 1e6 * G / r_cold
    print(f"\nper question of {G} rollouts, microseconds: straightforward {slow_q:,.0f}; ours with the table cached {cached_q:,.0f} "
          f"({cached_q / G:.1f} per completion: parse, F1, aux, box mapping, O(1) IoU); table build alone {build_us:,.0f}; "
          f"ours with the build {cold_q:,.0f} (build + rollouts + {cold_q - cached_q - build_us:,.0f} of cache effects when the two interleave)")
    print(f"{G} rollouts at {cached_q / G:.1f} us each plus one build at {build_us:.0f} us cap a fresh question at "
          f"{slow_q / (cached_q + build_us):.0f}x the straightforward version before cache effects")

    print(f"\ntargets: >= 2,000 completions/s on one core -> {'met' if r_cached >= 2000 else 'NOT met'} ({r_cached:,.0f}/s cached, {r_cold:,.0f}/s cold); "
          f">= 50x straightforward -> with the table cached {'met' if r_cached / r_slow >= 50 else 'NOT met'} ({r_cached / r_slow:.0f}x end to end, "
          f"{r_iou / r_iou_slow:.0f}x IoU alone); with the table built for each fresh question {'met' if r_cold / r_slow >= 50 else 'NOT met'} ({r_cold / r_slow:.0f}x)")

    # adversarial input: time grows linearly with length up to MAX_COMPLETION_CHARS, and stays there beyond (head + tail only)
    print(f"\nparse + score time on adversarial input (clinical_reward with mask), seconds; "
          f"texts over {MAX_COMPLETION_CHARS:,} characters are over-long: only their first 48k and last 16k are parsed")
    units = ["{", "\\boxed{", "\\boxed{{", "```", "'", '\\"', '{"bbox_2d": [1, 2, 3, 4], "label": "a"}, ', "<think>", "[[",
             "\\boxed{a}", "ab, "]
    sizes = [10_000, 60_000, 1_000_000, 4_000_000] if not args.quick else [10_000, 60_000, 1_000_000]
    print(f"{'pattern':44}" + "".join(f"{f'{s:,} chars':>16}" for s in sizes))
    for u in units:
        ts = []
        for s in sizes:
            text = ("```json\n[" if u.startswith('{"bbox') else "\\boxed{" if u == "ab, " else "") + u * (s // len(u))
            t0 = time.perf_counter(); clinical_reward(text, "a", mask=integrals[0]); ts.append(time.perf_counter() - t0)
        print(f"{repr(u):44}" + "".join(f"{t:16.4f}" for t in ts))

if __name__ == "__main__":
    main()
