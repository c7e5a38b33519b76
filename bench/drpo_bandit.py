"""A controlled test of DRPO's claim: does it lift rare and hard domains where GRPO neglects them?

Usage: python bench/drpo_bandit.py [--seeds 5] [--steps 300] [--out bench]

A simulated 7-domain diagnosis task (qoqmed.drpo.BanditProblem: frequencies 40:12:10:8:6:4:3, per-domain
labelling rule and label noise), a shared-plus-per-domain softmax policy over 4 labels, trained by the same
SGD policy-gradient update with a KL penalty to the initial policy; only the advantage estimator differs
(GRPO, DRPO domain-only, DRPO without KL damping, full DRPO). Each seed draws a new task and a new
training stream (the question stream is the same for every estimator, so differences are paired).
Three regimes: `skewed` (the frequencies above), `balanced` (equal frequencies, same difficulties: only
difficulty differs between domains) and `rare_unlearnable` (skewed, and the rarest domain's labels are pure
chance, so there is nothing to learn there: does DRPO waste its boosted weight on it?). Prints markdown tables (per-domain macro-F1 and accuracy on 400
held-out questions per domain, mean over seeds, paired difference vs GRPO with its standard error) and
saves a figure like the paper's Fig. 2a.
"""
import argparse, time
from pathlib import Path

import numpy as np

from qoqmed.drpo import BanditProblem, train_bandit

ALGOS = ["grpo", "drpo_domain_only", "drpo_nokl", "drpo"]
SKEWED, NOISE = (40, 12, 10, 8, 6, 4, 3), (0.05, 0.1, 0.2, 0.1, 0.3, 0.15, 0.25)
REGIMES = {  # name: (frequencies, label noise per domain)
    "skewed": (SKEWED, NOISE),
    "balanced": ((1,) * 7, NOISE),                                  # only difficulty differs
    "rare_unlearnable": (SKEWED, NOISE[:-1] + (1.0,)),              # the rarest domain's labels are pure chance
}


def run(regime, seeds, steps):
    "Metric arrays [algo][metric] of shape (seeds, domains)."
    out = {a: {"macro_f1": [], "accuracy": []} for a in ALGOS}
    for seed in range(seeds):
        problem = BanditProblem(frequencies=REGIMES[regime][0], label_noise=REGIMES[regime][1], seed=seed)
        for algo in ALGOS:
            r = train_bandit(problem, algo, steps=steps, seed=seed)
            for m in ("macro_f1", "accuracy"): out[algo][m].append(list(r[m].values()))
    return {a: {m: np.array(v) for m, v in d.items()} for a, d in out.items()}


def table(res, metric, shares):
    "Markdown: per-domain mean over seeds; for DRPO variants the paired difference vs GRPO ± standard error."
    D = res["grpo"][metric].shape[1]
    lines = ["| estimator | " + " | ".join(f"d{i} ({100 * s:.0f}%)" for i, s in enumerate(shares)) + " | mean over domains | rarest 3 |",
             "|---|" + "---:|" * (D + 2)]
    for a in ALGOS:
        v = res[a][metric]
        if a == "grpo":
            cells = [f"{x:.3f}" for x in v.mean(0)] + [f"{v.mean():.3f}", f"{v[:, -3:].mean():.3f}"]
        else:
            diff = v - res["grpo"][metric]
            se = diff.std(0, ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.zeros(D)
            per = diff.mean(1); rare = diff[:, -3:].mean(1)
            sem = lambda x: x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else 0.0
            cells = [f"{m:+.3f} ± {s:.3f}" for m, s in zip(diff.mean(0), se)] + [f"{per.mean():+.3f} ± {sem(per):.3f}", f"{rare.mean():+.3f} ± {sem(rare):.3f}"]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    ap.add_argument("--algos", nargs="+", default=ALGOS, choices=ALGOS, help="grpo is always run (the baseline)")
    args = ap.parse_args()
    ALGOS[:] = ["grpo"] + [a for a in args.algos if a != "grpo"]
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(args.regimes), figsize=(5.5 * len(args.regimes), 3.8), sharey=True, squeeze=False)
    axes = axes[0]
    t0 = time.perf_counter()
    for ax, regime in zip(axes, args.regimes):
        res = run(regime, args.seeds, args.steps)
        shares = np.array(REGIMES[regime][0], float) / sum(REGIMES[regime][0])
        print(f"\n### {regime} ({args.seeds} seeds, {args.steps} steps of 64 questions x 5 rollouts)\n")
        print("macro-F1 (GRPO row: absolute; others: difference vs GRPO ± s.e. over seeds)\n")
        print(table(res, "macro_f1", shares))
        print("\naccuracy\n")
        print(table(res, "accuracy", shares))
        x = np.arange(len(shares)); w = 0.27
        for j, a in enumerate(ALGOS[1:]):
            j = j - (len(ALGOS) - 2) / 2 + 1
            diff = res[a]["macro_f1"] - res["grpo"]["macro_f1"]
            ax.bar(x + (j - 1) * w, diff.mean(0), w, yerr=diff.std(0, ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else None, label=a, capsize=2)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(x, [f"d{i}\n{100 * s:.0f}%" for i, s in enumerate(shares)])
        ax.set_title(f"{regime}: macro-F1 difference vs GRPO"); ax.set_xlabel("domain (share of training questions)")
    axes[0].set_ylabel("Δ macro-F1"); axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(args.out) / ("drpo_bandit.png" if args.regimes == list(REGIMES) and args.steps == 300 else f"drpo_bandit_{'_'.join(args.regimes)}_{args.steps}steps.png")
    fig.savefig(path, dpi=90)
    print(f"\nfigure: {path}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
