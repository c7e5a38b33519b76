"""A re-implementation of the official QoQ-Med reward, for comparison only (not part of qoqmed).

It restates `medical_compute_score` of `examples/reward_function/medical.py` (repo DDVD233/QoQ_Med, commit ddb4b14) and
mathruler's `extract_boxed_content` step by step, with the same control flow, the same torch float32 tensors in the mask
branch and the same bare `except`s, so that `tests/test_rewards_official.py` can check `qoqmed.rewards.official_reward`
(written independently, in NumPy) against it. Inputs are what the official data loader hands the reward: a mask array
(zeros when the sample has none) and a float32 box tensor ([0, 0, 0, 0] when it has none)."""
import ast, json, re
import numpy as np
import torch


def extract_boxed_content(text):
    "mathruler.grader.extract_boxed_content: the last \\boxed{ ... } by brace depth, stripped; 'None' if unclosed or absent."
    start = text.rfind("\\boxed{")
    if start == -1: return "None"
    content, depth = text[start + len("\\boxed{"):], 0
    for i, ch in enumerate(content):
        if ch == "{": depth += 1
        elif ch == "}": depth -= 1
        if depth == -1: return content[:i].strip()
    return "None"


def parse_conditions(text):
    text = text.replace("\\boxed{", "").replace("}", "")
    for sep in (", ", " and ", " & ", ",", "&"):
        if sep in text: return set(c.strip() for c in text.split(sep))
    return {text.strip()}


def parse_json(text):
    "The format score's JSON text: after the first line that is ```json or a bare ```, cut at the next ```."
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line == "```json" or line.strip() == "```":
            text = "\n".join(lines[i + 1:])
            if "```" in text: text = text.split("```")[0]
            break
    return text


def extract_json_from_response(text):
    matches = re.findall(r"```(?:json)?\s*([\s\S]*?)```", text)
    if not matches: return None
    for m in matches:
        try: return json.loads(m.strip())
        except json.JSONDecodeError: continue
    for m in matches:
        try: return ast.literal_eval(m.strip().replace("'", "\""))
        except: continue   # noqa: E722 (as the official code)
    return None


def bbox_to_mask(bbox, height, width):
    mask = torch.zeros((height, width), dtype=torch.float32)
    x1 = max(0, min(int(bbox[0]), width - 1)); y1 = max(0, min(int(bbox[1]), height - 1))
    x2 = max(0, min(int(bbox[2]), width - 1)); y2 = max(0, min(int(bbox[3]), height - 1))
    if x1 > x2: x1, x2 = x2, x1
    if y1 > y2: y1, y2 = y2, y1
    if x1 < x2 and y1 < y2: mask[y1:y2 + 1, x1:x2 + 1] = 1.0
    return mask


def calculate_bbox_iou(pred_bboxes, seg_mask=None, gt_bbox=None):
    if not pred_bboxes: return 0.0
    if not isinstance(pred_bboxes[0], list): pred_bboxes = [pred_bboxes]
    if seg_mask is not None and isinstance(seg_mask, np.ndarray): seg_mask = torch.from_numpy(seg_mask)
    if seg_mask is not None and torch.sum(seg_mask) > 0:
        height, width = (seg_mask.shape[1], seg_mask.shape[2]) if len(seg_mask.shape) == 3 else (seg_mask.shape[0], seg_mask.shape[1])
        binary = (seg_mask > 0).float()
        total = 0.0
        for bbox in pred_bboxes:
            if len(bbox) < 4: continue
            try: box_mask = bbox_to_mask(bbox, height, width)
            except: continue   # noqa: E722
            inter = torch.sum(box_mask * binary)
            union = torch.sum(torch.clamp(box_mask + binary, 0, 1))
            total += inter / union if union > 0 else 0.0
        return total / len(pred_bboxes)
    elif gt_bbox is not None:
        total = 0.0
        for p in pred_bboxes:
            if len(p) < 4: continue
            gt_bbox = gt_bbox.tolist()   # the official defect: a list on the second box, which has no .tolist()
            x1, y1 = max(p[0], gt_bbox[0]), max(p[1], gt_bbox[1])
            x2, y2 = min(p[2], gt_bbox[2]), min(p[3], gt_bbox[3])
            if x1 >= x2 or y1 >= y2: iou = 0.0
            else:
                inter = (x2 - x1) * (y2 - y1)
                union = (p[2] - p[0]) * (p[3] - p[1]) + (gt_bbox[2] - gt_bbox[0]) * (gt_bbox[3] - gt_bbox[1]) - inter
                iou = inter / union if union > 0 else 0.0
            total += iou
        return total / len(pred_bboxes)
    return 0.0


def evaluate_bbox_format(text):
    score = 0.0
    if "```" in text:
        score += 0.2
        if "```json" in text: score += 0.1
    json_str = parse_json(text)
    if not json_str: return score
    try:
        try:
            parsed = json.loads(json_str); score += 0.2
        except json.JSONDecodeError:
            try:
                parsed = ast.literal_eval(json_str.replace("'", "\"")); score += 0.1
            except:   # noqa: E722
                return score
        if not isinstance(parsed, list): return score
        score += 0.1
        valid = 0
        for item in parsed:
            if not isinstance(item, dict): continue
            if "bbox_2d" in item and "label" in item:
                b = item["bbox_2d"]
                if isinstance(b, list) and len(b) == 4 and all(isinstance(c, (int, float)) for c in b): valid += 1
        if len(parsed) > 0: score += 0.4 * (valid / len(parsed))
    except Exception:
        pass
    return score


def medical_compute_score(predict_str, ground_truth, segmentation_mask=None, bbox=None):
    answer = extract_boxed_content(predict_str)
    if answer == "None": standard = 0.0
    else:
        pred, true = parse_conditions(answer), parse_conditions(ground_truth)
        tp, fp, fn = len(pred & true), len(pred - true), len(true - pred)
        precision = tp / (tp + fp) if (tp + fp) > 0 else 0
        recall = tp / (tp + fn) if (tp + fn) > 0 else 0
        standard = 2 * (precision * recall) / (precision + recall) if (precision + recall) > 0 else 0
    fmt = evaluate_bbox_format(predict_str)
    length = 1 if len(predict_str) > 600 else len(predict_str) * 0.001
    iou = 0.0
    data = extract_json_from_response(predict_str)
    if data:
        try:
            boxes = []
            if isinstance(data, list):
                for item in data:
                    if isinstance(item, dict) and "bbox_2d" in item: boxes.append(item["bbox_2d"])
            elif isinstance(data, dict) and "bbox_2d" in data: boxes.append(data["bbox_2d"])
            elif isinstance(data, dict) and "objects_of_interest" in data:
                for item in data["objects_of_interest"]:
                    if isinstance(item, dict) and "bbox_2d" in item: boxes.append(item["bbox_2d"])
            if boxes: iou = calculate_bbox_iou(boxes, segmentation_mask, bbox)
        except:   # noqa: E722
            pass
    return {"overall": 0.5 * standard + 0.3 * iou + 0.1 * fmt + 0.1 * length,
            "standard_score": standard, "iou_score": iou, "format_score": fmt, "length_score": length}
