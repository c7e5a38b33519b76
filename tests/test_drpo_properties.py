"Property tests of qoqmed.drpo: total, order-free, exact under the history bound, deterministic, restorable."
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from qoqmed.drpo import (DRPOAdvantage, DRPOConfig, PRESETS, cluster_questions, grpo_advantages, question_features,
                         single_threaded_sklearn, _kmeans)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=60)
reward = st.one_of(st.sampled_from([0.0, 1.0, 0.5, -1.0, 0.2]), st.floats(-5, 5, allow_nan=False, allow_infinity=False),
                   st.floats(-1e90, 1e90, allow_nan=False, allow_infinity=False))


@st.composite
def batches(draw, max_questions=6, equal_sizes=True):
    "A gathered batch: rewards, group ids, domains, KLs; 1-3 domains, groups of 2-5 rollouts."
    n_q = draw(st.integers(1, max_questions))
    size = draw(st.integers(2, 5))
    sizes = [size] * n_q if equal_sizes else [draw(st.integers(2, 5)) for _ in range(n_q)]
    doms = [draw(st.sampled_from(["ecg", "cxr", "derm"])) for _ in range(n_q)]
    r, g, d = [], [], []
    for q, (n, dom) in enumerate(zip(sizes, doms)):
        r += [draw(reward) for _ in range(n)]; g += [f"q{q}"] * n; d += [dom] * n
    kl = draw(st.one_of(st.none(), st.lists(st.one_of(st.floats(0, 50, allow_nan=False), st.floats(-1e90, 1e90, allow_nan=False)), min_size=len(r), max_size=len(r))))
    return r, g, d, kl


def grpo_reference(r, g, eps=1e-6):
    "Plain per-group loop: (r - mean)/(std + eps), unbiased std."
    r, g = np.asarray(r, float), np.asarray(g)
    out = np.empty_like(r)
    for q in dict.fromkeys(g):
        m = g == q
        out[m] = (r[m] - r[m].mean()) / (r[m].std(ddof=1) + eps)
    return out


@SETTINGS
@given(st.lists(batches(equal_sizes=False), min_size=1, max_size=3), st.sampled_from(sorted(PRESETS)))
def test_total(steps, preset):
    "Finite float32 advantages of the right length, for any batch and any preset, over several steps."
    est = DRPOAdvantage(DRPOConfig.preset(preset, history_size=8))
    for r, g, d, kl in steps:
        g = [f"{len(est.domains)}-{x}" for x in g]
        a = est(r, g, d, kl=kl)
        assert a.dtype == torch.float32 and a.shape == (len(r),)
        assert torch.isfinite(a).all(), (r, d, kl)


@SETTINGS
@given(batches())
def test_grpo_reduction(batch):
    "All switches off: exactly GRPO followed by batch-std scaling."
    r, g, d, kl = batch
    a = DRPOAdvantage(DRPOConfig.preset("grpo"))(r, g, d, kl=kl).numpy()
    s = grpo_reference(r, g)
    np.testing.assert_allclose(a, (s / (s.std(ddof=1) + 1e-6)).astype(np.float32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grpo_advantages(r, g).numpy(), s, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(batches(), st.randoms(use_true_random=False))
def test_rollout_order_free(batch, rnd):
    "Shuffling rollouts inside each group shuffles the advantages the same way and changes nothing else."
    r, g, d, kl = batch
    kl = kl or [0.1] * len(r)
    idx = list(range(len(r)))
    starts = [i for i in idx if i == 0 or g[i] != g[i - 1]] + [len(r)]
    perm = []
    for a, b in zip(starts, starts[1:]):
        block = idx[a:b]; rnd.shuffle(block); perm += block
    x = DRPOAdvantage()(r, g, d, kl=kl).numpy()
    y = DRPOAdvantage()([r[i] for i in perm], [g[i] for i in perm], [d[i] for i in perm], kl=[kl[i] for i in perm]).numpy()
    np.testing.assert_allclose(y, x[perm], rtol=1e-5, atol=1e-5)


@SETTINGS
@given(st.lists(batches(max_questions=5), min_size=2, max_size=6))
def test_exact_under_bound(steps):
    "While every domain has at most history_size questions, bounded and full-history estimators agree bit for bit."
    H = 10
    bounded, full = DRPOAdvantage(DRPOConfig(history_size=H)), DRPOAdvantage(DRPOConfig(history_size=None))
    for i, (r, g, d, kl) in enumerate(steps):
        g = [f"{i}-{x}" for x in g]
        a, b = bounded(r, g, d, kl=kl), full(r, g, d, kl=kl)
        if max(v["questions"] for v in bounded.domains.values()) > H: break
        assert torch.equal(a, b)


@SETTINGS
@given(st.lists(batches(), min_size=1, max_size=4))
def test_deterministic_and_restorable(steps):
    "Two instances agree bit for bit; a state saved with torch.save and loaded (weights_only) continues exactly."
    cfg = DRPOConfig(history_size=6)
    a, b = DRPOAdvantage(cfg), DRPOAdvantage(cfg)
    for i, (r, g, d, kl) in enumerate(steps):
        g = [f"{i}-{x}" for x in g]
        assert torch.equal(a(r, g, d, kl=kl), b(r, g, d, kl=kl))
    buf = io.BytesIO(); torch.save(a.state_dict(), buf); buf.seek(0)
    c = DRPOAdvantage(cfg); c.load_state_dict(torch.load(buf, weights_only=True))
    r, g, d, kl = steps[0]
    g = [f"next-{x}" for x in g]
    assert torch.equal(a(r, g, d, kl=kl), c(r, g, d, kl=kl))
    sa, sc = a.state_dict(), c.state_dict()
    assert sa["steps"] == sc["steps"] and sa["domains"].keys() == sc["domains"].keys()
    for k in sa["domains"]:
        assert torch.equal(sa["domains"][k]["features"], sc["domains"][k]["features"])
        assert sa["domains"][k]["reward_sum"] == sc["domains"][k]["reward_sum"]


@SETTINGS
@given(st.lists(batches(), min_size=1, max_size=4))
def test_running_statistics_exact(steps):
    "N_d and μ_d (paper) are the exact counts and means over everything seen; T_d = max(√N_d μ_d, ε)."
    est = DRPOAdvantage(DRPOConfig(history_size=3))
    seen = {}
    for i, (r, g, d, kl) in enumerate(steps):
        g = [f"{i}-{x}" for x in g]
        _, stats = est(r, g, d, kl=kl, return_stats=True)
        for x, q, dom in zip(r, g, d):
            seen.setdefault(dom, ({}, []))[0][q] = 1; seen[dom][1].append(x)
        for dom, info in stats["domains"].items():
            assert info["questions_seen"] == len(seen[dom][0])
            assert info["mean_reward"] == pytest.approx(np.mean(seen[dom][1]), rel=1e-9, abs=1e-9)
            assert info["domain_temperature"] == pytest.approx(max(np.sqrt(len(seen[dom][0])) * np.mean(seen[dom][1]), 1e-6))


@SETTINGS
@given(st.integers(3, 60), st.integers(0, 10_000))
def test_lazy_elbow_equals_full_sweep(n, seed):
    "The lazy elbow picks the k the official full sweep (fit k = 1..cap, then apply the rule) picks."
    rng = np.random.default_rng(seed)
    X = np.sort(np.round(rng.random((n, 4)) * rng.integers(1, 4), 1), axis=1)
    with single_threaded_sklearn():
        lazy = cluster_questions(X)
        uniq = np.unique(X, axis=0); uniq = uniq[np.argsort(uniq.mean(1), kind="stable")]
        cap = min(10, len(uniq))
        inertia = [_kmeans(X, k, 0, "quantile", uniq)[2] for k in range(1, cap + 1)]
    drops = -np.diff(inertia)
    k = next((i + 1 for i in range(1, len(drops)) if drops[i] < 0.1 * drops[i - 1]), cap)
    assert lazy.k == k


def test_errors():
    est = DRPOAdvantage()
    with pytest.raises(ValueError, match="group 'b' has 1 rollout"): est([1.0, 0.0, 1.0], ["a", "a", "b"], ["x"] * 3)
    with pytest.raises(ValueError, match="rewards: 1 value"): est([1.0, float("nan")], ["a", "a"], ["x"] * 2)
    with pytest.raises(ValueError, match="domains: has 1 entries"): est([1.0, 0.0], ["a", "a"], ["x"])
    with pytest.raises(ValueError, match="kl: has 1 entries"): est([1.0, 0.0], ["a", "a"], ["x"] * 2, kl=[0.1])
    with pytest.raises(ValueError, match="mixes domains"): est([1.0, 0.0], ["a", "a"], ["x", "y"])


def test_inputs_any_type():
    "Lists, numpy and torch inputs, integer or tuple ids give the same result."
    r = [1.0, 0.0, 0.5, 0.5, 1.0, 1.0, 0.0, 1.0]
    ref = DRPOAdvantage()(r, ["a"] * 4 + ["b"] * 4, ["x"] * 4 + ["y"] * 4)
    out = DRPOAdvantage()(torch.tensor(r), torch.tensor([7] * 4 + [9] * 4), np.array(["x"] * 4 + ["y"] * 4))
    assert torch.equal(ref, out)
    out = DRPOAdvantage()(np.array(r), [(1, "a")] * 4 + [(2, "b")] * 4, ("x",) * 4 + ("y",) * 4)
    assert torch.equal(ref, out)


def test_question_features_sorted():
    r = np.array([0.3, 0.1, 0.2, 1.0, 0.0, 0.5])
    assert question_features(r, np.array([0, 0, 0, 1, 1, 1]), 3).tolist() == [[0.1, 0.2, 0.3], [0.0, 0.5, 1.0]]
