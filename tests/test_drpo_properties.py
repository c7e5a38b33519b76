"""Property tests of qoqmed.drpo: total, order-free, exact under the history bound, deterministic, restorable,
free of the reward unit, NaN-aware (unscorable rollouts are as if absent), and strict about bad input and bad states."""
import copy, io, math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from qoqmed.drpo import (DRPOAdvantage, DRPOConfig, PRESETS, cluster_questions, grpo_advantages, question_features,
                         single_threaded_sklearn, _kmeans)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=60)
signed_reward = st.one_of(st.sampled_from([0.0, 1.0, 0.5, -1.0, 0.2]), st.floats(-5, 5, allow_nan=False, allow_infinity=False),
                          st.floats(-1e90, 1e90, allow_nan=False, allow_infinity=False))
reward = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.2]), st.floats(0, 5, allow_nan=False, allow_infinity=False),
                   st.floats(0, 1e90, allow_nan=False, allow_infinity=False))   # >= 0: what the temperatures need
unit_reward = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.2]), st.floats(0, 1, allow_nan=False, allow_infinity=False))
NAN = float("nan")


@st.composite
def batches(draw, max_questions=6, equal_sizes=True, rewards=reward, nan_share=0.0):
    "A gathered batch: rewards (NaN with probability ~nan_share), group ids, domains, KLs; 1-3 domains, groups of 2-5 rollouts."
    n_q = draw(st.integers(1, max_questions))
    size = draw(st.integers(2, 5))
    sizes = [size] * n_q if equal_sizes else [draw(st.integers(2, 5)) for _ in range(n_q)]
    doms = [draw(st.sampled_from(["ecg", "cxr", "derm"])) for _ in range(n_q)]
    r, g, d = [], [], []
    for q, (n, dom) in enumerate(zip(sizes, doms)):
        r += [draw(rewards) for _ in range(n)]; g += [f"q{q}"] * n; d += [dom] * n
    if nan_share: r = [NAN if draw(st.floats(0, 1)) < nan_share else x for x in r]
    kl = draw(st.one_of(st.none(), st.lists(st.one_of(st.floats(0, 50, allow_nan=False), st.floats(-1e90, 1e90, allow_nan=False)), min_size=len(r), max_size=len(r))))
    if kl is not None and nan_share: kl = [NAN if math.isnan(x) else k for x, k in zip(r, kl)]   # the trainer's KL is NaN where the reward is
    return r, g, d, kl


def grpo_reference(r, g, eps=1e-6):
    "Plain per-group loop over the scored rollouts: (r - mean)/(std + eps·σ), unbiased std, σ = the largest |reward| that counts."
    r, g = np.asarray(r, float), np.asarray(g)
    out = np.zeros_like(r)
    counts = [q for q in dict.fromkeys(g) if (~np.isnan(r[g == q])).sum() >= 2]
    kept = np.concatenate([r[(g == q) & ~np.isnan(r)] for q in counts]) if counts else np.zeros(0)
    sigma = np.abs(kept).max() if len(kept) and np.abs(kept).max() > 0 else 1.0
    for q in counts:
        m = (g == q) & ~np.isnan(r)
        out[m] = (r[m] - r[m].mean()) / (r[m].std(ddof=1) + eps * sigma)
    return out


@SETTINGS
@given(st.lists(batches(equal_sizes=False, nan_share=0.2), min_size=1, max_size=3), st.sampled_from(sorted(PRESETS)), st.booleans())
def test_total(steps, preset, signed):
    "Finite float32 advantages of the right length, 0 where the reward is NaN, for any batch and preset over several steps (negative rewards: grpo)."
    est = DRPOAdvantage(DRPOConfig.preset(preset, history_size=8))
    for r, g, d, kl in steps:
        if signed: r = [-x if i % 3 == 0 else x for i, x in enumerate(r)]
        if signed and est.config.temperatures and any(x < 0 for x in r):
            with pytest.raises(ValueError, match="negative rewards"): est(r, g, d, kl=kl)
            continue
        g = [f"{est.steps}-{x}" for x in g]
        a = est(r, g, d, kl=kl)
        assert a.dtype == torch.float32 and a.shape == (len(r),)
        assert torch.isfinite(a).all(), (r, d, kl)
        assert (a[torch.isnan(torch.tensor(r))] == 0).all()


@SETTINGS
@given(batches(rewards=signed_reward))
def test_grpo_reduction(batch):
    "All switches off: exactly GRPO (ε relative to the reward scale) followed by batch-std scaling; negative rewards accepted."
    r, g, d, kl = batch
    a = DRPOAdvantage(DRPOConfig.preset("grpo"))(r, g, d, kl=kl).numpy()
    s = grpo_reference(r, g)
    np.testing.assert_allclose(a, (s / (s.std(ddof=1) + 1e-6)).astype(np.float32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grpo_advantages(r, g).numpy(), s, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(batches(rewards=signed_reward, nan_share=0.3))
def test_grpo_nan_aware(batch):
    "grpo_advantages with NaN rewards: each group's mean and std over its scored rollouts, 0 for the rest."
    r, g, d, kl = batch
    np.testing.assert_allclose(grpo_advantages(r, g).numpy(), grpo_reference(r, g), rtol=1e-5, atol=1e-6)


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
@given(st.lists(batches(nan_share=0.25), min_size=1, max_size=4))
def test_running_statistics_exact(steps):
    "N_d and μ_d (paper) are the exact counts and means over everything that counted; T_d = max(√N_d μ_d, ε·σ)."
    est = DRPOAdvantage(DRPOConfig(history_size=3))
    seen = {}
    for i, (r, g, d, kl) in enumerate(steps):
        g = [f"{i}-{x}" for x in g]
        _, stats = est(r, g, d, kl=kl, return_stats=True)
        scored = {q: sum(not math.isnan(x) for x, h in zip(r, g) if h == q) for q in set(g)}
        for x, q, dom in zip(r, g, d):
            seen.setdefault(dom, ({}, []))
            if scored[q] >= 2 and not math.isnan(x): seen[dom][0][q] = 1; seen[dom][1].append(x)
        for dom, info in stats["domains"].items():
            assert info["questions_seen"] == len(seen[dom][0])
            if "mean_reward" not in info: assert info["questions_in_batch"] == 0; continue
            assert info["mean_reward"] == pytest.approx(np.mean(seen[dom][1]), rel=1e-9, abs=1e-9)
            sigma = stats["reward_scale"]
            assert info["domain_temperature"] == pytest.approx(max(np.sqrt(len(seen[dom][0])) * np.mean(seen[dom][1]), 1e-6 * sigma))


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
    with pytest.raises(ValueError, match="group 'b' has 1 rollout"): est([1.0, 0.0, NAN], ["a", "a", "b"], ["x"] * 3)
    with pytest.raises(ValueError, match="rewards: 1 value.* infinite"): est([1.0, float("inf")], ["a", "a"], ["x"] * 2)
    with pytest.raises(ValueError, match="rewards: 1 value.* infinite"): grpo_advantages([1.0, -float("inf")], ["a", "a"])
    with pytest.raises(ValueError, match="kl: NaN at index 0, a scored rollout"): est([1.0, 0.0], ["a", "a"], ["x"] * 2, kl=[NAN, 0.1])
    with pytest.raises(ValueError, match="kl: 1 value.* infinite"): est([1.0, 0.0], ["a", "a"], ["x"] * 2, kl=[float("inf"), 0.1])
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


def test_nan_example():
    "[1, 0, NaN, NaN]: the two scored rollouts alone (±0.707), not the imputed ±1.225; every preset."
    for preset in sorted(PRESETS):
        a = DRPOAdvantage(DRPOConfig.preset(preset))([1.0, 0.0, NAN, NAN], ["q"] * 4, ["x"] * 4, kl=[0.1, 0.1, NAN, NAN])
        np.testing.assert_allclose(a.numpy(), [0.70710677, -0.70710677, 0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(grpo_advantages([1.0, 0.0, NAN, NAN], ["q"] * 4).numpy(), [0.70710677, -0.70710677, 0, 0], atol=1e-5)
    a, stats = DRPOAdvantage()([NAN] * 4, ["q"] * 4, ["x"] * 4, return_stats=True)   # nothing scorable: zeros, no history
    assert torch.equal(a, torch.zeros(4)) and stats["domains"]["x"]["unscored_rollouts"] == 4 and stats["unscored_rollouts"] == 4


def _history(est):
    "The estimator's history as comparable plain values."
    return est.feature_dim, {k: (v["questions"], v["rollouts"], v["reward_sum"], v["features"].tolist()) for k, v in est.domains.items()}


@SETTINGS
@given(st.lists(batches(max_questions=5, nan_share=0.3), min_size=1, max_size=4), st.sampled_from(sorted(PRESETS)))
def test_nan_rollouts_as_if_absent(steps, preset):
    "A batch with NaN rollouts: on the rollouts that count, exactly the advantages of the batch without the others, the same history, 0 elsewhere."
    cfg = DRPOConfig.preset(preset, history_size=6, feature_dim=3)
    with_nan, without = DRPOAdvantage(cfg), DRPOAdvantage(cfg)
    for i, (r, g, d, kl) in enumerate(steps):
        g = [f"{i}-{x}" for x in g]
        scored = {q: sum(not math.isnan(x) for x, h in zip(r, g) if h == q) for q in g}
        keep = [j for j, (x, q) in enumerate(zip(r, g)) if not math.isnan(x) and scored[q] >= 2]
        a = with_nan(r, g, d, kl=kl)
        rest = [j for j in range(len(r)) if j not in keep]
        assert (a[rest] == 0).all()
        if keep:
            pick = lambda xs: None if xs is None else [xs[j] for j in keep]
            b = without(pick(r), pick(g), pick(d), kl=pick(kl))
            assert torch.equal(a[keep], b), (r, g, d, kl)
        assert _history(with_nan) == _history(without)


@SETTINGS
@given(st.lists(batches(max_questions=5, rewards=unit_reward, nan_share=0.1), min_size=1, max_size=3), st.sampled_from(sorted(PRESETS)),
       st.one_of(st.sampled_from([1e-3, 0.37, 3.0, 1e3, 1e4, 1e6]), st.floats(1e-3, 1e6)), st.booleans())
def test_scale_invariant(steps, preset, c, with_kl):
    "Rewards c·r give the advantages of r (to float32 tolerance), for c from 1e-3 to 1e6, every preset, with and without KL."
    a, b = DRPOAdvantage(DRPOConfig.preset(preset, history_size=8)), DRPOAdvantage(DRPOConfig.preset(preset, history_size=8))
    for i, (r, g, d, kl) in enumerate(steps):
        g = [f"{i}-{x}" for x in g]
        kl = (kl or [0.1] * len(r)) if with_kl else None
        x, y = a(r, g, d, kl=kl), b([c * v for v in r], g, d, kl=kl)
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-4, atol=1e-4, err_msg=f"c={c}")


@SETTINGS
@given(st.lists(batches(max_questions=5, rewards=unit_reward), min_size=1, max_size=4), st.sampled_from(sorted(PRESETS)))
def test_unit_rewards_unchanged_once_one_is_seen(steps, preset):
    "Rewards in [0, 1]: once a reward of exactly 1 has counted, σ = 1 and the default is bit for bit the absolute-ε estimator (reward_scale=1.0)."
    steps[0][0][0] = 1.0
    scaled, pinned = DRPOAdvantage(DRPOConfig.preset(preset, history_size=8)), DRPOAdvantage(DRPOConfig.preset(preset, history_size=8, reward_scale=1.0))
    for i, (r, g, d, kl) in enumerate(steps):
        g = [f"{i}-{x}" for x in g]
        assert torch.equal(scaled(r, g, d, kl=kl), pinned(r, g, d, kl=kl))


def test_scale_invariant_worked_batch():
    "Rewards x1e3, x1e4, x1e6 keep the advantage std at 1 (with ε in absolute units it fell to 0.65, 0.06, 7e-6)."
    r = np.array([1, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0, .5, 1, 0, .5, 0, 1, 0, 0.])
    g, d = np.repeat(np.arange(6), 4), ["ecg"] * 12 + ["cxr"] * 8 + ["derm"] * 4
    kl = np.random.default_rng(0).random(24)
    for preset in sorted(PRESETS):
        base = DRPOAdvantage(DRPOConfig.preset(preset))(r, g, d, kl=kl)
        for c in (1e-3, 1e3, 1e4, 1e6):
            out = DRPOAdvantage(DRPOConfig.preset(preset))(r * c, g, d, kl=kl)
            np.testing.assert_allclose(out.numpy(), base.numpy(), rtol=1e-5, atol=1e-6)
            assert abs(float(out.std()) - 1) < 1e-4
    old = DRPOAdvantage(DRPOConfig(reward_scale=1.0))(r * 1e4, g, d, kl=kl)   # ε in absolute units: the old behaviour
    assert float(old.std()) < 0.1


def test_negative_rewards():
    "Temperatures need rewards >= 0: a clear error naming the domain and its smallest reward; grpo accepts them; nothing is recorded."
    r, g, d = [0.5, -0.25, 1.0, 0.0], ["a", "a", "b", "b"], ["derm", "derm", "ecg", "ecg"]
    for preset in ("drpo", "drpo_domain_only", "drpo_nokl", "drpo_reference"):
        est = DRPOAdvantage(DRPOConfig.preset(preset))
        with pytest.raises(ValueError, match=r"domain 'derm' \(smallest reward -0.25\) has negative rewards.*Shift the reward.*algo 'grpo'"):
            est(r, g, d)
        assert est.domains == {} and est.steps == 0
    a = DRPOAdvantage(DRPOConfig.preset("grpo"))(r, g, d)
    assert torch.isfinite(a).all() and a[0] > 0 > a[1]
    DRPOAdvantage()([NAN, 0.0, 1.0, 0.0], g, d)     # NaN is not negative


def test_unhashable_ids():
    with pytest.raises(ValueError, match="group_ids: the id at index 1 is a list, which is not hashable"):
        DRPOAdvantage()([1.0, 0.0], ["a", ["a"]], ["x", "x"])
    with pytest.raises(ValueError, match="group_ids: the id at index 0 is a dict"):
        grpo_advantages([1.0, 0.0], [{}, {}])


def _state(cfg=DRPOConfig(history_size=4)):
    est = DRPOAdvantage(cfg)
    for step in range(3):
        rng = np.random.default_rng(step)
        est(rng.random(24), np.repeat(np.arange(6) + 10 * step, 4), np.repeat(["ecg", "ecg", "cxr", "ecg", "derm", "cxr"], 4), kl=rng.random(24))
    return est


def _plain_only(x):
    if isinstance(x, dict): return all(isinstance(k, str) and _plain_only(v) for k, v in x.items())
    if isinstance(x, (list, tuple)): return all(map(_plain_only, x))
    return x is None or type(x) in (bool, int, float, str) or isinstance(x, torch.Tensor)


def test_state_weights_only_round_trip(tmp_path):
    "state_dict holds only weights_only-safe values; torch.save -> torch.load(weights_only=True) -> load_state_dict continues exactly."
    cfg = DRPOConfig(history_size=4, seed=np.int64(2), max_clusters=np.int64(5))
    est = _state(cfg)
    state = est.state_dict()
    assert _plain_only(state), state
    torch.save(state, tmp_path / "drpo_state.pt")
    back = DRPOAdvantage(cfg); back.load_state_dict(torch.load(tmp_path / "drpo_state.pt", weights_only=True))
    rng = np.random.default_rng(9)
    r, g, d, kl = rng.random(16), np.repeat(np.arange(4) + 99, 4), np.repeat(["ecg", "cxr", "ecg", "new"], 4), rng.random(16)
    assert torch.equal(est(r, g, d, kl=kl), back(r, g, d, kl=kl))
    assert _history(est) == _history(back) and est.steps == back.steps


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.clear() or s.update(version=1), r"missing keys \['config', 'steps', 'feature_dim', 'domains'\]"),
    (lambda s: s["domains"]["ecg"].pop("features"), r"domain 'ecg': missing keys \['features'\]"),
    (lambda s: s["domains"]["ecg"].update(rollouts=-1), "domain 'ecg': rollouts must be a non-negative integer, got -1"),
    (lambda s: s["domains"]["ecg"].update(questions=2.5), "questions must be a non-negative integer, got 2.5"),
    (lambda s: s.update(steps=-3), "steps must be a non-negative integer"),
    (lambda s: s["domains"]["cxr"].update(features=torch.zeros(4, 7, dtype=torch.float64)), r"features have shape \(4, 7\), expected \(4, 4\)"),
    (lambda s: s["domains"]["cxr"].update(features=torch.full((4, 4), float("nan"), dtype=torch.float64)), "features hold NaN"),
    (lambda s: s["domains"]["cxr"].update(reward_sum=-1.0), "reward_sum -1 < 0"),
    (lambda s: s["domains"]["cxr"].update(reward_sum="x"), "reward_sum must be a number"),
    (lambda s: s["domains"].update(bad=[1, 2]), "domain 'bad': expected a dict"),
    (lambda s: s["config"].update(history_size=8), "config mismatch: the state was saved with history_size=8, this estimator has history_size=4"),
    (lambda s: s["config"].update(seed=5), "config mismatch: the state was saved with seed=5"),
    (lambda s: s.update(feature_dim=None), r"feature_dim is None but 3 domain\(s\) have a history"),
    (lambda s: s.update(version=7), "unknown state version 7"),
    (lambda s: s.update(reward_max=float("nan")), "reward_max must be a finite number >= 0"),
])
def test_bad_states_refused(edit, message):
    "A broken or mismatched state is a ValueError naming what is wrong, and the estimator is left untouched."
    state = copy.deepcopy(_state().state_dict()); edit(state)
    target = _state()
    before = _history(target)
    with pytest.raises(ValueError, match=message): target.load_state_dict(state)
    assert _history(target) == before


def test_state_without_reward_max_loads():
    "States saved before reward_max existed load; σ is then rebuilt from the next batches."
    state = _state().state_dict(); state.pop("reward_max")
    est = DRPOAdvantage(DRPOConfig(history_size=4)); est.load_state_dict(state)
    assert est.reward_max == 0.0
    est([0.2, 0.4, 0.1, 0.0], ["a", "a", "b", "b"], ["ecg"] * 4)
    assert est.reward_max == 0.4 and est.last_stats["reward_scale"] == 0.4


def test_state_config_mismatch_feature_dim():
    state = _state().state_dict()
    with pytest.raises(ValueError, match="question features have dim 4, this estimator's config.feature_dim is 5"):
        DRPOAdvantage(DRPOConfig(history_size=4, feature_dim=5)).load_state_dict(state)
    DRPOAdvantage(DRPOConfig(history_size=4, feature_dim=4)).load_state_dict(state)
    with pytest.raises(ValueError, match="expected the dict of DRPOAdvantage.state_dict"): DRPOAdvantage().load_state_dict([1])
