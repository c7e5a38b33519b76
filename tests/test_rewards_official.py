"""`reward_preset="official"` reproduces the official QoQ-Med reward to 1e-9.

`qoqmed.rewards.official_reward` and the official preset's TRL reward functions are compared with
`tests/official_medical_reward.py` (a re-implementation of the official `medical_compute_score`, torch tensors and all)
on 61 varied completions: boxes, several boxes, masks (2-D and the loader's (1, H, W)), no ground truth, `\\text{}`,
short and long completions, broken format."""
import functools, json
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import official_medical_reward as official
from qoqmed.rewards import (official_reward, clinical_reward, completion_text, OFFICIAL_REWARD_FUNCS, OFFICIAL_REWARD_WEIGHTS,
    REFERENCE_WEIGHTS, official_iou_reward_func)
from qoqmed.trl_data import default_reward_funcs

H, W = 64, 80
MASK = np.zeros((H, W), dtype=bool); MASK[20:40, 10:50] = True           # rows 20-39, columns 10-49
MASK3 = MASK[None].astype(np.float32)                                   # (1, H, W), as the official collate pads it
MASK_L = np.zeros((H, W), dtype=np.uint8); MASK_L[5:15, 60:75] = 255    # an 8-bit PNG mask
BOX = [10.0, 20.0, 50.0, 40.0]                                          # the mask's bounding box
ODD_BOX = [10.3, 20.7, 50.1, 40.9]                                      # not exactly representable in float32

THINK = "<think>The lesion is in the right lower zone, with a meniscus sign.</think>\n"
LONG = "<think>" + "The findings are consistent with a right pleural effusion. " * 12 + "</think>\n"   # > 600 characters

def fenced(items, tag="json"):
    return f"```{tag}\n{json.dumps(items)}\n```\n"

def box(*b, label="effusion"):
    return {"bbox_2d": list(b), "label": label}

def cases():
    A = "\\boxed{Pleural effusion}"
    one, two = fenced([box(10, 20, 50, 40)]), fenced([box(12, 22, 48, 38), box(60, 5, 75, 15, label="apex")])
    yield "mask, one good box", THINK + one + A, "Pleural effusion", MASK, None
    yield "mask, two boxes", THINK + two + A, "Pleural effusion", MASK, None
    yield "mask (1,H,W), two boxes", THINK + two + A, "Pleural effusion", MASK3, None
    yield "uint8 mask", THINK + fenced([box(60, 5, 74, 14)]) + A, "Pleural effusion", MASK_L, None
    yield "box, one box", THINK + one + A, "Pleural effusion", None, BOX
    yield "box, two boxes (multi-box bug)", THINK + two + A, "Pleural effusion", None, BOX
    yield "box, three boxes", THINK + fenced([box(10, 20, 50, 40)] * 3) + A, "Pleural effusion", None, BOX
    yield "box, short then good", THINK + fenced([box(1, 2), box(10, 20, 50, 40)]) + A, "Pleural effusion", None, BOX
    yield "mask, short then good", THINK + fenced([box(1, 2), box(10, 20, 50, 40)]) + A, "Pleural effusion", MASK, None
    yield "box, float32 ground truth", THINK + fenced([box(10.5, 20.25, 50.75, 40.125)]) + A, "Pleural effusion", None, ODD_BOX
    yield "box, reversed prediction", THINK + fenced([box(50, 40, 10, 20)]) + A, "Pleural effusion", None, BOX
    yield "mask, reversed prediction", THINK + fenced([box(50, 40, 10, 20)]) + A, "Pleural effusion", MASK, None
    yield "mask, flat box", THINK + fenced([box(10, 20, 10, 40)]) + A, "Pleural effusion", MASK, None
    yield "mask, box off the image", THINK + fenced([box(-30, -30, 500, 500)]) + A, "Pleural effusion", MASK, None
    yield "mask, float corners", THINK + fenced([box(10.9, 20.9, 49.2, 39.7)]) + A, "Pleural effusion", MASK, None
    yield "mask, string corners", THINK + fenced([box("10", "20", "50", "40")]) + A, "Pleural effusion", MASK, None
    yield "box, string corners", THINK + fenced([box("10", "20", "50", "40")]) + A, "Pleural effusion", None, BOX
    yield "mask, null box", THINK + fenced([{"bbox_2d": None, "label": "x"}, box(10, 20, 50, 40)]) + A, "Pleural effusion", MASK, None
    yield "mask, first box not a list", THINK + fenced([{"bbox_2d": 10}, {"bbox_2d": 20}, {"bbox_2d": 50}, {"bbox_2d": 40}]) + A, "Pleural effusion", MASK, None
    yield "single dict", THINK + "```json\n" + json.dumps(box(10, 20, 50, 40)) + "\n```\n" + A, "Pleural effusion", MASK, None
    yield "objects_of_interest", THINK + "```json\n" + json.dumps({"objects_of_interest": [box(10, 20, 50, 40)]}) + "\n```\n" + A, "Pleural effusion", None, BOX
    yield "objects_of_interest not a list", THINK + "```json\n{\"objects_of_interest\": 3}\n```\n" + A, "Pleural effusion", MASK, None
    yield "single quotes (literal_eval)", THINK + "```json\n[{'bbox_2d': [10, 20, 50, 40], 'label': 'effusion'}]\n```\n" + A, "Pleural effusion", MASK, None
    yield "python literals", THINK + "```json\n[{'bbox_2d': [10, 20, 50, 40], 'label': None, 'ok': True},]\n```\n" + A, "Pleural effusion", None, BOX
    yield "tuple box (literal_eval)", THINK + "```\n[{'bbox_2d': (10, 20, 50, 40), 'label': 'x'}]\n```\n" + A, "Pleural effusion", MASK, None
    yield "bare fence", THINK + fenced([box(10, 20, 50, 40)], tag="") + A, "Pleural effusion", MASK, None
    yield "JSON tag upper case", THINK + fenced([box(10, 20, 50, 40)], tag="JSON") + A, "Pleural effusion", MASK, None
    yield "inline fence", THINK + "```json [" + json.dumps(box(10, 20, 50, 40)) + "]```\n" + A, "Pleural effusion", MASK, None
    yield "second block parses", THINK + "```json\nnot json\n```\n" + fenced([box(10, 20, 50, 40)]) + A, "Pleural effusion", MASK, None
    yield "unclosed fence", THINK + "```json\n[" + json.dumps(box(10, 20, 50, 40)) + "\n" + A, "Pleural effusion", MASK, None
    yield "empty list", THINK + fenced([]) + A, "Pleural effusion", MASK, None
    yield "labels missing", THINK + fenced([{"bbox_2d": [10, 20, 50, 40]}, box(1, 2, 3, 4)]) + A, "Pleural effusion", MASK, None
    yield "boolean corners", THINK + fenced([box(True, True, 50, 40)]) + A, "Pleural effusion", MASK, None
    yield "five corners", THINK + fenced([box(10, 20, 50, 40, 99)]) + A, "Pleural effusion", None, BOX
    yield "NaN corner", THINK + "```json\n[{\"bbox_2d\": [NaN, 20, 50, 40], \"label\": \"x\"}]\n```\n" + A, "Pleural effusion", MASK, None
    yield "NaN corner, box", THINK + "```json\n[{\"bbox_2d\": [NaN, 20, 50, 40], \"label\": \"x\"}]\n```\n" + A, "Pleural effusion", None, BOX
    yield "no ground truth, box", THINK + one + A, "Pleural effusion", None, None
    yield "no ground truth (loader zeros)", THINK + one + A, "Pleural effusion", np.zeros((H, W), np.uint8), [0, 0, 0, 0]
    yield "empty mask, box", THINK + one + A, "Pleural effusion", np.zeros((1, H, W), np.float32), BOX
    yield "no JSON at all", THINK + A, "Pleural effusion", MASK, None
    yield "\\text{} answer", THINK + one + "\\boxed{\\text{Pleural effusion}}", "Pleural effusion", MASK, None
    yield "lower-case answer", THINK + one + "\\boxed{pleural effusion}", "Pleural effusion", MASK, None
    yield "two labels", THINK + one + "\\boxed{Pleural effusion, Edema}", "Pleural effusion", MASK, None
    yield "three labels, 'and'", THINK + one + "\\boxed{Edema, Effusion and Atelectasis}", "Edema, Effusion, Atelectasis", None, None
    yield "ampersand", THINK + "\\boxed{Edema & Effusion}", "Edema & Effusion", None, None
    yield "comma without space", THINK + "\\boxed{Edema,Effusion}", "Effusion,Edema", None, None
    yield "two boxed answers", THINK + "\\boxed{Edema} or \\boxed{Pleural effusion}", "Pleural effusion", None, None
    yield "unclosed last box", THINK + "\\boxed{Pleural effusion} then \\boxed{Edema", "Pleural effusion", None, None
    yield "nested braces", THINK + "\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", None, None
    yield "boxed None", THINK + "\\boxed{None}", "None", None, None
    yield "no answer", THINK + one, "Pleural effusion", MASK, None
    yield "ECG letter", "<think>ST elevation in II, III, aVF.</think>\n```json\n[]\n```\n\\boxed{D}", "D", None, None
    yield "ECG letter vs text", "<think>ST elevation.</think>\n\\boxed{D}", "Inferior myocardial infarction", None, None
    yield "empty completion", "", "Pleural effusion", None, None
    yield "600 characters", "x" * 576 + A, "Pleural effusion", None, None
    yield "601 characters", "x" * 577 + A, "Pleural effusion", None, None
    yield "long reasoning, mask", LONG + two + A, "Pleural effusion", MASK, None
    yield "long reasoning, box", LONG + one + A, "Pleural effusion", None, BOX
    yield "prose only", "The answer is pleural effusion.", "Pleural effusion", None, None
    yield "apostrophes in prose", "It's the patient's effusion ```json\n[" + json.dumps(box(10, 20, 50, 40, label="pt's")) + "]\n```\n" + A, "Pleural effusion", None, BOX
    yield "two labels, exact", THINK + "\\boxed{Edema, Effusion}", "Edema, Effusion", None, None

CASES = list(cases())

def _official(text, truth, mask, bbox):
    "The official reward, given what its data loader passes: a zero mask and a [0, 0, 0, 0] float32 box when absent."
    mask = np.zeros((1, H, W), np.float32) if mask is None else mask
    bbox = torch.tensor([0, 0, 0, 0] if bbox is None else bbox, dtype=torch.float32)
    return {k: float(v) for k, v in official.medical_compute_score(text, truth, mask, bbox).items()}

def test_enough_varied_cases():
    assert len(CASES) >= 53
    assert len({c[0] for c in CASES}) == len(CASES)

@pytest.mark.parametrize("name,text,truth,mask,bbox", CASES, ids=[c[0] for c in CASES])
def test_official_reward_matches_the_official_code(name, text, truth, mask, bbox):
    ref, ours = _official(text, truth, mask, bbox), official_reward(text, truth, mask=mask, bbox=bbox)
    for k_ref, k in [("overall", "overall"), ("standard_score", "accuracy"), ("iou_score", "iou"), ("format_score", "format"), ("length_score", "length")]:
        assert abs(ours[k] - ref[k_ref]) <= 1e-9, (name, k, ours[k], ref[k_ref])

def test_the_set_exercises_every_branch():
    refs = [_official(*c[1:]) for c in CASES]
    ious = [r["iou_score"] for r in refs]
    assert sum(v > 0 for v in ious) >= 15 and sum(0 < v < 1 for v in ious) >= 8
    assert len({round(r["format_score"], 9) for r in refs}) >= 6
    assert {1.0, 0.0} <= {r["standard_score"] for r in refs} and any(0 < r["standard_score"] < 1 for r in refs)
    assert any(r["length_score"] == 1 for r in refs) and any(r["length_score"] < 0.6 for r in refs)

def test_the_paper_and_reference_presets_are_not_the_official_reward():
    "clinical_reward with the official weights and mean IoU still differs on most of the set (the documented fixes)."
    differ = 0
    for name, text, truth, mask, bbox in CASES:
        ref = _official(text, truth, mask, bbox)["overall"]
        ours = clinical_reward(text, truth, mask=mask, bbox=bbox, weights=REFERENCE_WEIGHTS, reduce="mean")["overall"]
        differ += abs(ours - ref) > 1e-9
    assert differ >= 0.8 * len(CASES)

def test_official_preset_inside_trl_reward_functions():
    "The preset's TRL functions (as `default_reward_funcs('official')` gives them) return the official components; TRL's float32 weighted sum is the official total."
    funcs = default_reward_funcs("official")
    assert funcs == OFFICIAL_REWARD_FUNCS and OFFICIAL_REWARD_WEIGHTS == [0.5, 0.3, 0.1, 0.1]
    masks = {f"m{i}.png": c[3] for i, c in enumerate(CASES) if c[3] is not None}
    path = {id(m): p for p, m in masks.items()}
    loader = lambda p: masks[p]
    batch = dict(prompts=[""] * len(CASES), completions=[[{"role": "assistant", "content": c[1]}] for c in CASES],
                 answer=[c[2] for c in CASES], segmentation_path=[None if c[3] is None else path[id(c[3])] for c in CASES],
                 bbox=[c[4] for c in CASES])
    funcs = [functools.partial(f, mask_loader=loader) if f is official_iou_reward_func else f for f in funcs]
    cols = np.array([f(**batch) for f in funcs])
    refs = [_official(*c[1:]) for c in CASES]
    expected = np.array([[r[k] for k in ("standard_score", "iou_score", "format_score", "length_score")] for r in refs]).T
    np.testing.assert_allclose(cols, expected, rtol=0, atol=1e-9)
    trl_total = (torch.tensor(cols.T, dtype=torch.float32) * torch.tensor(OFFICIAL_REWARD_WEIGHTS)).nansum(1)
    np.testing.assert_allclose(trl_total.numpy(), [r["overall"] for r in refs], rtol=0, atol=1e-6)
