"""Per-step cost of the DRPO advantage vs history length, side by side with a full-history reclustering.

Usage: python bench/drpo.py [--steps 5] [--histories 0 50000 200000 1000000] [--reference-max 200000]

Each row: a history of H questions already seen (spread over 7 domains, 40:12:10:8:6:4:3), then steps of
512 questions x 5 rollouts. `qoqmed.drpo.DRPOAdvantage` (bounded per-domain history, exact up to
`history_size` questions per domain) is timed over `--steps` steps; the reference-style implementation
(every question ever seen is reclustered, k = 1..10 all fitted then the chosen k refitted, as the official code
does) is timed over one step, up to `--reference-max` questions of history. Ratios are measured in this run.
"""
import argparse, math, platform, subprocess, time

import numpy as np
import torch
from sklearn.cluster import KMeans

from qoqmed.drpo import DRPOAdvantage, DRPOConfig, grpo_advantages, question_features, _codes, _group_normalise

SHARES = np.array([40, 12, 10, 8, 6, 4, 3], float); SHARES /= SHARES.sum()
DOMAINS = np.array(["cxr", "ct", "mri", "ultrasound", "derm", "fundus", "ecg"])


def make_batch(rng, questions=512, rollouts=5, offset=0):
    "Rewards like QoQ-Med's: 0.6 accuracy + 0.2 IoU + 0.2 format, per-question difficulty, skewed domains."
    dom = rng.choice(len(SHARES), questions, p=SHARES)
    p_correct = rng.beta(1 + dom[:, None] * 0.2, 1.5, (questions, 1))
    acc = (rng.random((questions, rollouts)) < p_correct).astype(float)
    iou = rng.beta(2, 3, (questions, rollouts)) * acc
    fmt = (rng.random((questions, rollouts)) < 0.9).astype(float)
    r = np.round(0.6 * acc + 0.2 * iou + 0.2 * fmt, 2)
    return r.ravel(), np.repeat(np.arange(questions) + offset, rollouts), DOMAINS[np.repeat(dom, rollouts)]


class FullHistoryDRPO:
    "Straightforward DRPO: keep every question's features and recluster each domain's full history every step."

    def __init__(self, eps=1e-6, max_clusters=10, tol=0.1):
        self.eps, self.max_clusters, self.tol, self.history = eps, max_clusters, tol, {}

    def prefill(self, rewards, group_ids, domains):
        "Add questions to the history without computing anything (to start a row at a given history length)."
        r = np.asarray(rewards, float); codes, names = _codes(group_ids, len(r), "group_ids")
        feats = question_features(r, codes, 5)
        first = np.unique(codes, return_index=True)[1]
        for d in np.unique(domains):
            q = np.flatnonzero(np.asarray(domains)[first] == d)
            h = self.history.setdefault(d, dict(features=[], reward_sum=0.0, rollouts=0))
            h["features"].append(feats[q]); h["reward_sum"] += float(feats[q].sum()); h["rollouts"] += 5 * len(q)

    def __call__(self, rewards, group_ids, domains):
        r = np.asarray(rewards, float); codes, names = _codes(group_ids, len(r), "group_ids")
        s = _group_normalise(r, codes, names, self.eps)[0]
        self.prefill(rewards, group_ids, domains)
        first = np.unique(codes, return_index=True)[1]
        qdom = np.asarray(domains)[first]
        temp = np.ones(len(names))
        for d, h in self.history.items():                       # every domain, every step, as the official code
            X = np.concatenate(h["features"]); h["features"] = [X]
            cap = min(self.max_clusters, len(np.unique(X, axis=0)))
            inertia = [KMeans(k, n_init="auto", random_state=0).fit(X).inertia_ for k in range(1, cap + 1)]
            drops = -np.diff(inertia)
            k = next((i + 1 for i in range(1, len(drops)) if drops[i] < self.tol * drops[i - 1]), cap)
            km = KMeans(k, n_init="auto", random_state=0).fit(X)
            counts = np.bincount(km.labels_, minlength=k); mu_c = km.cluster_centers_.mean(1)
            q = np.flatnonzero(qdom == d)
            if len(q) == 0: continue
            lab = km.labels_[-len(q):]
            T_d = max(math.sqrt(len(X)) * h["reward_sum"] / h["rollouts"], self.eps)
            temp[q] = T_d * np.maximum(np.sqrt(counts[lab]) * mu_c[lab], self.eps)
        out = s / temp[codes]
        return torch.as_tensor(out / (out.std(ddof=1) + self.eps), dtype=torch.float32)


def prefill_ours(est, n, rng, chunk=50_000):
    "Feed `n` questions of history through the estimator in large chunks."
    done = 0
    while done < n:
        b = min(chunk, n - done)
        est(*make_batch(rng, b, offset=10**9 + done)); done += b


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--histories", type=int, nargs="+", default=[0, 50_000, 200_000, 1_000_000])
    ap.add_argument("--reference-max", type=int, default=200_000, help="largest history the reference is timed at")
    args = ap.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), platform.processor())
    print(f"machine: {model}, {torch.get_num_threads()} torch threads, load average {open('/proc/loadavg').read().split()[:3]}")

    # exactness: below history_size per domain, bounded == full reclustering, bit for bit
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    bounded, full = DRPOAdvantage(DRPOConfig(kl_damping=False)), DRPOAdvantage(DRPOConfig(kl_damping=False, history_size=None))
    same = []
    for step in range(4):
        a, b = bounded(*make_batch(rng_a, offset=step * 512)), full(*make_batch(rng_b, offset=step * 512))
        same.append((max(v["questions"] for v in bounded.domains.values()), torch.equal(a, b)))
    print("exactness (largest domain history, identical to full reclustering):", same)

    print(f"\nwall ms (CPU ms of this process in brackets: the machine is shared, wall time includes waiting for a core)")
    print(f"| history (questions) | GRPO ms | DRPOAdvantage ms, mean / max of {args.steps} (CPU) | full-history reference ms, 1 step (CPU) | reference / ours (wall) |")
    print("|---:|---:|---:|---:|---:|")
    rows = []
    for H in args.histories:
        rng = np.random.default_rng(H)
        ours = DRPOAdvantage()
        prefill_ours(ours, H, rng)
        batches = [make_batch(rng, offset=step * 512) for step in range(args.steps)]
        kls = [rng.random(2560) * 0.1 for _ in batches]
        t = time.perf_counter(); [grpo_advantages(b[0], b[1]) for b in batches]; grpo_ms = (time.perf_counter() - t) / len(batches) * 1e3
        ours(*batches[0], kl=kls[0])                           # warm-up (imports, thread pool)
        times, cpu = [], []
        for b, kl in zip(batches, kls):
            t, c = time.perf_counter(), time.process_time(); ours(*b, kl=kl)
            times.append((time.perf_counter() - t) * 1e3); cpu.append((time.process_time() - c) * 1e3)
        ref_ms = None
        if H <= args.reference_max:
            ref = FullHistoryDRPO()
            if H: ref.prefill(*make_batch(np.random.default_rng(H), H, offset=10**9))
            t, c = time.perf_counter(), time.process_time(); ref(*batches[0])
            ref_ms, ref_cpu = (time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3
        ratio = f"{ref_ms / np.mean(times):.0f}x" if ref_ms else "not run"
        ref_s = f"{ref_ms:.0f} ({ref_cpu:.0f})" if ref_ms else f"not run (> {args.reference_max:,})"
        print(f"| {H:,} | {grpo_ms:.1f} | {np.mean(times):.1f} / {np.max(times):.1f} ({np.mean(cpu):.1f}) | {ref_s} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
