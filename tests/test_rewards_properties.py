"""Property tests for `qoqmed.rewards`: every component is total (any string in, a finite number in [0, 1] out),
the mask IoU equals brute-force rasterisation, the box mapping is the processor's rule, and parsing stays linear on
adversarial input. 10,500 completions in all go through every component (the official preset's included) (derandomized, so CI is deterministic)."""
import math, time
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from qoqmed.rewards import _scan_boxed
from qoqmed.rewards import (MaskIntegral, parse_completion, parse_boxed, parse_reasoning, accuracy_reward, iou_reward,
    format_reward, length_reward, aux_reward, clinical_reward, box_iou, boxes_to_original, boxes_to_model,
    model_input_size, accuracy_reward_func, iou_reward_func, aux_reward_func, format_reward_func, length_reward_func,
    clinical_reward_func, label_set, REFERENCE_WEIGHTS, PAPER_WEIGHTS, QWEN25_VL_MIN_PIXELS, QWEN25_VL_MAX_PIXELS,
    official_reward, official_accuracy_reward_func, official_iou_reward_func, official_format_reward_func, official_length_reward_func)

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)

# one fixed 512 x 640 mask (its summed-area table built once, as the TRL functions cache it per path)
MASK = np.zeros((512, 640), dtype=bool); MASK[300:460, 60:260] = True; MASK[50:80, 500:600] = True
INTEGRAL = MaskIntegral(MASK)
MASK3 = MASK[None].astype(np.float32)   # the official loader's (1, H, W) float mask
CHOICES = ["Normal sinus rhythm", "Atrial fibrillation", "Left bundle branch block", "Inferior myocardial infarction"]
COUNTS = {"completions": 0}
model_input_size((640, 512))   # imports transformers' smart_resize once, before any timed test

def _ok(x, name):
    assert isinstance(x, float) and math.isfinite(x) and 0.0 <= x <= 1.0, (name, x)

def check_all_components(text:str, truth:str="pleural effusion"):
    "Push one completion through every component and TRL function; all must return finite values in [0, 1]."
    COUNTS["completions"] += 1
    p = parse_completion(text)
    assert p.answer is None or isinstance(p.answer, str)
    assert all(len(b) == 4 and all(math.isfinite(c) for c in b) for b in p.boxes)
    for t in (truth, text, "D"):
        _ok(accuracy_reward(p.answer, t), "accuracy")
        _ok(accuracy_reward(p.answer, t, choices=CHOICES, synonyms={"effusion": "pleural effusion"}), "accuracy mc")
    for reduce in ("max", "mean"):
        _ok(iou_reward(p.boxes, mask=INTEGRAL, reduce=reduce), "iou mask")
        _ok(iou_reward(p.boxes, bbox=[60, 300, 260, 460], reduce=reduce), "iou box")
        _ok(iou_reward(boxes_to_original(p.boxes, (640, 512)), mask=INTEGRAL, reduce=reduce), "iou mapped")
    assert iou_reward(p.boxes) is None
    for f in (format_reward, length_reward, aux_reward): _ok(f(text), f.__name__)
    for kw in (dict(mask=INTEGRAL), dict(bbox=[60, 300, 260, 460], image_size=(640, 512)), dict(choices=CHOICES), {}):
        for weights in (PAPER_WEIGHTS, REFERENCE_WEIGHTS):
            r = clinical_reward(text, truth, weights=weights, **kw)
            for k, v in r.items():
                if not (k == "iou" and v is None): _ok(v, f"clinical {k}")
    # the TRL functions, on a plain and a conversational completion
    batch = dict(prompts=["q", "q"], completions=[text, [{"role": "assistant", "content": [{"type": "text", "text": text}]}]],
                 answer=[truth, truth], bbox=[[60, 300, 260, 460], None], image_size=[(640, 512), None], choices=[None, CHOICES],
                 dataset=["a", "b"])
    for f in (accuracy_reward_func, aux_reward_func, format_reward_func, length_reward_func, clinical_reward_func):
        for v in f(**batch): _ok(v, f.__name__)
    iou = iou_reward_func(**batch)
    _ok(iou[0], "iou_reward_func"); assert iou[1] is None
    # the official preset (its defects reproduced, but total all the same)
    for kw in (dict(mask=MASK), dict(mask=MASK3), dict(bbox=[60, 300, 260, 460]), {}):
        for k, v in official_reward(text, truth, **kw).items(): _ok(v, f"official {k}")
    for f in (official_accuracy_reward_func, official_format_reward_func, official_length_reward_func, official_iou_reward_func):
        for v in f(**batch): _ok(v, f.__name__)

# --- strategies ---------------------------------------------------------------------------------------------------
FRAGMENTS = ["<think>", "</think>", "```", "```json\n", "\n```", "\\boxed{", "\\boxed {", "{", "}", "[", "]", "(", ")",
    '{"bbox_2d": [', "{'bbox_2d': [", '"label": "effusion"', "'label': 'x'", '"objects_of_interest": [', "NaN", "Infinity",
    "-Infinity", "nan", "inf", "-1e308", "1e999", "1" * 400, "-7", "0.5", "3e-320", ", ", ",", "'", '"', "\\", "\\\\",
    "\\'", '\\"', "and", " and ", "&", ";", "True", "None", "null", "\\text{", "é", "ß", "İ", "🫀", "\u202e", "\u0000",
    "\ufeff", "\r\n", "\t", "A", "B)", "(C)", "option d", "Pleural effusion", "melanoma"]
fragment_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=40).map("".join)

coord = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from([0, 1, 639, 640, 511, 512, 1e308, -1e308, 10**400]), st.text(max_size=3), st.booleans(), st.none())
plausible = st.lists(st.one_of(st.integers(-50, 700), st.floats(-50, 700)), min_size=4, max_size=4)
box_item = st.fixed_dictionaries({"bbox_2d": st.one_of(plausible, plausible, st.lists(coord, min_size=4, max_size=4),
                                                       st.lists(coord, min_size=0, max_size=6), coord)},
                                 optional={"label": st.one_of(st.text(max_size=10), st.integers())})

def _dump(items, quote, trailing):
    "Render box items as JSON-ish text: strict, single-quoted, or with trailing commas."
    def val(v):
        if isinstance(v, bool): return "true" if v else "false"
        if v is None: return "null"
        if isinstance(v, float):
            return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity") if math.isinf(v) else repr(v)
        if isinstance(v, int): return str(v)
        if isinstance(v, str): return quote + v.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote
        if isinstance(v, list): return "[" + ", ".join(map(val, v)) + (", " if trailing and v else "") + "]"
        if isinstance(v, dict): return "{" + ", ".join(f"{val(k)}: {val(x)}" for k, x in v.items()) + (", " if trailing else "") + "}"
    return val(items)

@st.composite
def structured_completion(draw):
    "A QoQ-Med-shaped completion with arbitrary parts: think text, box JSON (possibly malformed), boxed answers."
    parts = []
    if draw(st.booleans()): parts.append("<think>" + draw(st.text(max_size=60)) + ("</think>" if draw(st.booleans()) else ""))
    items = draw(st.lists(box_item, max_size=5))
    shape = draw(st.sampled_from(["list", "single", "ooi", "garbage"]))
    value = items if shape == "list" else (items[0] if items and shape == "single" else {"objects_of_interest": items} if shape == "ooi" else draw(st.text(max_size=20)))
    body = _dump(value, draw(st.sampled_from(['"', "'"])), draw(st.booleans())) if shape != "garbage" else value
    parts.append(draw(st.sampled_from(["```json\n", "```", "``` json ", ""])) + body + draw(st.sampled_from(["\n```", "```", ""])))
    for _ in range(draw(st.integers(0, 3))):
        parts.append("\\boxed{" + draw(st.one_of(st.text(max_size=20), st.sampled_from(["A", "D. Inferior myocardial infarction", "\\text{Effusion}, edema and PE"]))) + draw(st.sampled_from(["}", "}}", ""])))
    return draw(st.sampled_from(["\n", " ", ""])).join(parts)

ADVERSARIAL_UNITS = ["{", "}", "[", "]", "\\boxed{", "\\boxed{{", "{\\boxed{", "```", "```json\n[", "<think>", "</think>",
    "'", '"', '\\"', "\\'", ",", ", ]", '{"bbox_2d": [1, 2, 3, 4], "label": "a"}, ', "{'bbox_2d': [1,2,3,4],},", "[[", "a and ",
    "é🫀", "\\text{", "NaN, "]

# --- totality -----------------------------------------------------------------------------------------------------
@settings(max_examples=3500, **SETTINGS)
@given(st.text(max_size=400))
def test_total_on_arbitrary_text(text):
    check_all_components(text)

@settings(max_examples=3500, **SETTINGS)
@given(fragment_text, st.text(max_size=30))
def test_total_on_adversarial_fragments(text, truth):
    check_all_components(text, truth or "x")

@settings(max_examples=3000, **SETTINGS)
@given(structured_completion())
def test_total_on_structured_completions(text):
    check_all_components(text)

@settings(max_examples=500, **SETTINGS)
@given(st.lists(st.tuples(st.sampled_from(ADVERSARIAL_UNITS), st.integers(1, 10_000)), min_size=1, max_size=3))
def test_total_on_huge_inputs(units):
    check_all_components("".join(u * n for u, n in units))

def test_at_least_ten_thousand_completions():
    "Runs after the property tests in this file (pytest keeps file order) and checks how many completions they fed."
    if COUNTS["completions"] == 0: pytest.skip("run the whole file to count")
    assert COUNTS["completions"] >= 10_000, COUNTS

# --- linear time on adversarial input -----------------------------------------------------------------------------
@pytest.mark.parametrize("unit", ADVERSARIAL_UNITS)
def test_parsing_is_linear_on_a_megabyte(unit):
    "A million characters of one adversarial pattern parse in well under a few seconds (quadratic would take hours)."
    text = unit * (1_000_000 // len(unit))
    t0 = time.perf_counter()
    clinical_reward(text, "a", mask=INTEGRAL, image_size=(640, 512))
    assert time.perf_counter() - t0 < 5.0

# --- semantics ----------------------------------------------------------------------------------------------------
@settings(max_examples=300, **SETTINGS)
@given(st.text(max_size=60))
def test_an_answer_matches_itself(text):
    if label_set(text): assert accuracy_reward(text, text) == 1.0
    else: assert accuracy_reward(text, text) == 0.0

@settings(max_examples=300, **SETTINGS)
@given(st.text(max_size=40))
def test_boxed_roundtrip(answer):
    "Whatever balanced text goes in a \\boxed{}, the parser gives it back (the last box wins)."
    if answer.count("{") != answer.count("}") or "\\boxed" in answer: return
    depth = 0
    for ch in answer:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0: return
    assert parse_boxed(f"x \\boxed{{first}} y \\boxed{{{answer}}} z")[0] == answer

@settings(max_examples=1000, **SETTINGS)
@given(fragment_text)
def test_boxed_fast_path_agrees_with_the_scan(text):
    first = text.find("\\boxed")
    assert parse_boxed(text) == ((None, 0) if first < 0 else _scan_boxed(text, first))

def _brute_iou(mask, box):
    ys, xs = np.arange(mask.shape[0]) + 0.5, np.arange(mask.shape[1]) + 0.5
    x1, x2 = sorted(box[0::2]); y1, y2 = sorted(box[1::2])
    b = ((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]
    union = (b | mask).sum()
    return (b & mask).sum() / union if union else 0.0

@settings(max_examples=400, **SETTINGS)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1),
       st.lists(st.one_of(st.integers(-8, 40), st.floats(-8, 40)), min_size=4, max_size=4))
def test_mask_iou_equals_brute_force(h, w, seed, box):
    mask = np.random.default_rng(seed).random((h, w)) < 0.4
    assert abs(MaskIntegral(mask).iou(box) - _brute_iou(mask, box)) < 1e-12

@settings(max_examples=300, **SETTINGS)
@given(st.lists(st.floats(-1e4, 1e4), min_size=4, max_size=4), st.lists(st.floats(-1e4, 1e4), min_size=4, max_size=4))
def test_box_iou_symmetric_and_bounded(a, b):
    assert box_iou(a, b) == box_iou(b, a)
    assert 0.0 <= box_iou(a, b) <= 1.0

@settings(max_examples=300, **SETTINGS)
@given(st.integers(10, 5000), st.integers(10, 5000),
       st.sampled_from([(QWEN25_VL_MIN_PIXELS, QWEN25_VL_MAX_PIXELS), (3136, 1_003_520), (65_536, 524_288), (256 * 28 * 28, 1280 * 28 * 28)]))
def test_mapping_is_the_processors_rule(w, h, pixels):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
    lo, hi = pixels
    if max(w, h) / min(w, h) > 200: return
    rh, rw = smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)
    assert model_input_size((w, h), min_pixels=lo, max_pixels=hi) == (rw, rh)
    box = [(0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h)]
    back = boxes_to_original(boxes_to_model(box, (w, h), min_pixels=lo, max_pixels=hi), (w, h), min_pixels=lo, max_pixels=hi)
    assert np.allclose(back, box)
    assert np.allclose(boxes_to_original([(0, 0, rw, rh)], (w, h), min_pixels=lo, max_pixels=hi), [(0, 0, w, h)])

# --- bounded work per completion ----------------------------------------------------------------------------------
import qoqmed.rewards as rewards_module
from qoqmed.rewards import MAX_COMPLETION_CHARS, HEAD_CHARS, TAIL_CHARS

CXR = ('<think>Blunted right costophrenic angle with a meniscus.</think>\n```json\n[{"bbox_2d": [100, 320, 300, 480], '
       '"label": "pleural effusion"}]\n```\n')
RUNAWAY_UNITS = ["ab, ", "{}", "\\boxed{a}", " I will check again.", "\\boxed{", "```json\n[", "'"]

def _seen_by_parsers(monkeypatch, text):
    "Parse `text` with every parser wrapped; the lengths of the strings each was given."
    seen = []
    for name in ("parse_boxed", "parse_reasoning", "_fenced_blocks", "_scan_boxed"):
        f = getattr(rewards_module, name)
        monkeypatch.setattr(rewards_module, name, lambda t, *a, _f=f, **k: (seen.append(len(t)), _f(t, *a, **k))[1])
    p = rewards_module.parse_completion(text)
    monkeypatch.undo()
    return p, seen

@pytest.mark.parametrize("unit", RUNAWAY_UNITS)
def test_over_long_parsers_see_a_bounded_text(monkeypatch, unit):
    "A 4 MB completion: no parser is handed more than HEAD_CHARS characters, head and tail together at most MAX_COMPLETION_CHARS."
    text = CXR + unit * (4_000_000 // len(unit)) + "\\boxed{Pleural effusion}"
    p, seen = _seen_by_parsers(monkeypatch, text)
    assert p.over_long and seen and max(seen) <= HEAD_CHARS, seen
    assert HEAD_CHARS + TAIL_CHARS == MAX_COMPLETION_CHARS
    short = CXR + unit * 10 + "\\boxed{Pleural effusion}"      # under the bound: the whole text, as always
    p, seen = _seen_by_parsers(monkeypatch, short)
    assert not p.over_long and max(seen) == len(short)

def test_over_long_costs_about_what_the_bound_costs():
    "Time of 4 MB over 64 kB of the worst pattern (a boxed answer of many labels) is a small ratio, not the ~60x of a linear parse."
    def best(text):
        out = []
        for _ in range(3):
            t0 = time.perf_counter(); clinical_reward(text, "ab", choices=["ab", "cd"], mask=INTEGRAL, image_size=(640, 512)); out.append(time.perf_counter() - t0)
        return min(out)
    ratios = []
    for make in (lambda n: "\\boxed{" + "ab, " * (n // 4) + "}", lambda n: "\\boxed{a}" * (n // 9), lambda n: "\\boxed{" + "{}" * (n // 2) + "}"):
        ratios.append(best(make(4_000_000)) / best(make(MAX_COMPLETION_CHARS - 16)))
    assert max(ratios) < 8, ratios      # a linear parse would be ~61x; measured ~0.01-1.5

def test_over_long_result_is_sensible():
    "A runaway completion keeps the accuracy and IoU of what it says (answer from the tail, boxes from the head); format and length are 0."
    end = "\\boxed{Pleural effusion}"
    short = CXR + end
    runaway = CXR + " I will check again." * 200_000 + end
    kw = dict(mask=INTEGRAL, image_size=(640, 512))
    a, b = clinical_reward(short, "pleural effusion", **kw), clinical_reward(runaway, "pleural effusion", **kw)
    assert (b["accuracy"], b["iou"]) == (a["accuracy"], a["iou"]) == (1.0, a["iou"]) and a["iou"] > 0
    assert (b["format"], b["length"], b["aux"]) == (0.0, 0.0, 0.0) and a["format"] == 1.0
    assert b["overall"] == pytest.approx(0.6 * 1.0 + 0.2 * a["iou"])
    p = parse_completion(runaway)
    assert p.over_long and p.reasoning == parse_completion(short).reasoning and p.n_answers == 1
    # the answer only at the start (the model answered, then looped): the head's answer counts
    assert parse_completion(end + " again" * 20_000).answer == "Pleural effusion"

@settings(max_examples=200, **SETTINGS)
@given(st.integers(-3, 3), st.sampled_from(["\\boxed{A}", "<think>r</think>", "```json\n[]\n```", "x"]))
def test_bound_is_exact(offset, unit):
    "Up to MAX_COMPLETION_CHARS the whole text is parsed (an answer in the middle is found); one character more and it is over-long."
    n = MAX_COMPLETION_CHARS + offset
    middle = "\\boxed{MID}"
    text = (unit * (n // len(unit)))[: (n - len(middle)) // 2] + middle
    text = text + "y" * (n - len(text))
    assert len(text) == n
    p = parse_completion(text)
    assert p.over_long == (n > MAX_COMPLETION_CHARS)
    if n <= MAX_COMPLETION_CHARS: assert p.answer == "MID"
