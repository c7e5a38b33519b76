"""The reward functions run inside TRL 1.16's own `GRPOTrainer._calculate_rewards` (called on a stand-in trainer, no
model): the calling convention, None -> NaN for the IoU, names TRL logs, and the weighted sum TRL forms."""
import functools, math
from types import SimpleNamespace
from collections import defaultdict
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from trl import GRPOTrainer
from trl.trainer.utils import get_callable_name
from qoqmed.rewards import (PAPER_REWARD_FUNCS, PAPER_REWARD_WEIGHTS, REFERENCE_REWARD_FUNCS, REFERENCE_REWARD_WEIGHTS,
    clinical_reward_func, iou_reward_func, clinical_reward, mask_integral_from_path, REFERENCE_WEIGHTS)

MASK = np.zeros((512, 640), dtype=bool); MASK[300:460, 60:260] = True
CXR = ('<think>Blunted right costophrenic angle with a meniscus.</think>\n```json\n[{"bbox_2d": [100, 320, 300, 480], '
       '"label": "pleural effusion"}]\n```\n\\boxed{Pleural effusion}')
ECG = "<think>ST elevation in II, III, aVF.</think>\n```json\n[]\n```\n\\boxed{D}"
CHOICES = ["Normal sinus rhythm", "Atrial fibrillation", "Left bundle branch block", "Inferior myocardial infarction"]

def _stand_in_trainer(funcs):
    metrics = defaultdict(list)
    return SimpleNamespace(
        accelerator=SimpleNamespace(device=torch.device("cpu"), is_main_process=True),
        reward_funcs=funcs, reward_processing_classes=[None] * len(funcs),
        reward_func_names=[get_callable_name(f) for f in funcs], state=SimpleNamespace(global_step=0),
        args=SimpleNamespace(report_to=[]), _log_completion_extra=lambda c, v: None,
        _log_metric=lambda name, value: metrics[name].append(value), environments=None), metrics

def _inputs():
    rows = [dict(answer="pleural effusion", segmentation_path="m.png", bbox=None, image_size=(640, 512), choices=None, dataset="vindr"),
            dict(answer="D", segmentation_path=None, bbox=None, image_size=None, choices=CHOICES, dataset="ptbxl")]
    prompts = [[{"role": "user", "content": [{"type": "text", "text": "What is the finding?"}]}]] * 2
    completions = [[{"role": "assistant", "content": t}] for t in (CXR, ECG)]
    return rows, prompts, completions

@pytest.mark.parametrize("funcs,weights,component_weights", [(PAPER_REWARD_FUNCS, PAPER_REWARD_WEIGHTS, None),
                                                             (REFERENCE_REWARD_FUNCS, REFERENCE_REWARD_WEIGHTS, REFERENCE_WEIGHTS)])
def test_inside_trl_calculate_rewards(funcs, weights, component_weights):
    mask_integral_from_path.cache_clear()
    loader = lambda path: MASK
    funcs = [functools.partial(f, mask_loader=loader) if get_callable_name(f) == "iou_reward_func" else f for f in funcs]
    trainer, _ = _stand_in_trainer(funcs)
    rows, prompts, completions = _inputs()
    out = GRPOTrainer._calculate_rewards(trainer, rows, prompts, completions, [[1, 2]] * 2)
    assert out.shape == (2, len(funcs))
    iou_col = trainer.reward_func_names.index("iou_reward_func")
    assert not math.isnan(out[0, iou_col]) and math.isnan(out[1, iou_col])   # no mask, no box: left out
    total = (out * torch.tensor(weights)).nansum(dim=1)
    # TRL's weighted nansum equals clinical_reward's total times the applicable weight mass
    kw = dict(weights=component_weights or {"accuracy": .6, "iou": .2, "aux": .2}, reduce="max" if component_weights is None else "mean")
    ref0 = clinical_reward(CXR, "pleural effusion", mask=MASK, image_size=(640, 512), **kw)["overall"]
    ref1 = clinical_reward(ECG, "D", choices=CHOICES, **kw)["overall"]
    iou_weight = weights[iou_col]
    assert abs(total[0].item() - ref0) < 1e-6
    assert abs(total[1].item() - ref1 * (1 - iou_weight)) < 1e-6

def test_clinical_reward_func_inside_trl_logs_components():
    mask_integral_from_path.cache_clear()
    f = functools.partial(clinical_reward_func, mask_loader=lambda path: MASK)
    trainer, metrics = _stand_in_trainer([f])
    rows, prompts, completions = _inputs()
    out = GRPOTrainer._calculate_rewards(trainer, rows, prompts, completions, [[1, 2]] * 2)
    assert trainer.reward_func_names == ["clinical_reward_func"]
    assert abs(out[1, 0].item() - clinical_reward(ECG, "D", choices=CHOICES)["overall"]) < 1e-6
    assert set(metrics) == {f"clinical/{k}" for k in ("accuracy", "iou", "aux", "format", "length")}
    assert metrics["clinical/accuracy"] == [1.0]

def test_default_mask_loader_reads_a_png(tmp_path):
    "With no mask_loader, masks are read by qoqmed.data.load_mask (PNG here), cached per path."
    data = pytest.importorskip("qoqmed.data")
    if not hasattr(data, "load_mask"): pytest.skip("qoqmed.data.load_mask not available yet")
    from PIL import Image
    Image.fromarray((MASK * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    mask_integral_from_path.cache_clear()
    path = str(tmp_path / "mask.png")
    out = iou_reward_func(prompts=["q"] * 2, completions=[CXR, ECG], segmentation_path=[path, path], image_size=[(640, 512)] * 2)
    want = clinical_reward(CXR, "x", mask=MASK, image_size=(640, 512))["iou"]
    assert abs(out[0] - want) < 1e-12 and out[1] == 0.0   # the ECG completion has no boxes: IoU 0 against a mask
    assert mask_integral_from_path.cache_info().misses == 1
    with pytest.raises(data.DataError, match="missing.png"):
        iou_reward_func(prompts=["q"], completions=[CXR], segmentation_path=[str(tmp_path / "missing.png")])

def test_official_preset_inside_trl_calculate_rewards():
    "The official preset's functions in TRL: IoU 0 (not NaN) without ground truth, and TRL's weighted sum is the official total."
    from qoqmed.rewards import OFFICIAL_REWARD_FUNCS, OFFICIAL_REWARD_WEIGHTS, official_iou_reward_func, official_reward
    funcs = [functools.partial(f, mask_loader=lambda path: MASK) if f is official_iou_reward_func else f for f in OFFICIAL_REWARD_FUNCS]
    trainer, _ = _stand_in_trainer(funcs)
    rows, prompts, completions = _inputs()
    rows[0]["answer"] = "Pleural effusion"
    out = GRPOTrainer._calculate_rewards(trainer, rows, prompts, completions, [[1, 2]] * 2)
    assert trainer.reward_func_names == ["official_accuracy_reward_func", "official_iou_reward_func",
                                         "official_format_reward_func", "official_length_reward_func"]
    assert not torch.isnan(out).any() and out[1, 1].item() == 0.0
    total = (out * torch.tensor(OFFICIAL_REWARD_WEIGHTS)).nansum(dim=1)
    expected = [official_reward(CXR, "Pleural effusion", mask=MASK)["overall"], official_reward(ECG, "D")["overall"]]
    assert abs(total[0].item() - expected[0]) < 1e-6 and abs(total[1].item() - expected[1]) < 1e-6
    assert abs(expected[0] - (0.5 + 0.3 * 22_400 / 41_961 + 0.1 + 0.1 * 0.001 * len(CXR))) < 1e-6   # one box, filled inclusively: 201 x 161 pixels
