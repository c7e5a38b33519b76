"`qoqmed prepare`: the cache feeds the processor, the rewards and the trainer's dataset as the original files do; the command resumes a killed run."
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

from qoqmed.demo import DEMO_DATA
from qoqmed.prepare import PROGRESS_NAME, prepare_jsonl
from qoqmed.records import read_jsonl

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny():
    from qoqmed.model import tiny_qoqmed
    return tiny_qoqmed()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny):
    _, processor = tiny
    size = processor.image_processor.size
    out = tmp_path_factory.mktemp("cache")
    res = prepare_jsonl(DEMO_DATA, out, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"], workers=2, progress=False)
    assert res.records == 14 and not res.skipped
    return res


def test_processor_sees_the_same_input(tiny, prepared):
    "Every prompt encodes to the same tokens and the same pixels from the cache as from the original files."
    from qoqmed.records import build_messages
    from qoqmed.trl_data import encode_prompt, to_trl_prompt
    _, processor = tiny
    for a, b in zip(read_jsonl(DEMO_DATA), read_jsonl(prepared.jsonl)):
        ea, eb = encode_prompt(processor, to_trl_prompt(build_messages(a))), encode_prompt(processor, to_trl_prompt(build_messages(b)))
        assert ea["input_ids"] == eb["input_ids"], a.id
        assert set(ea["media"]) == set(eb["media"]), a.id
        for k in ea["media"]:
            x, y = ea["media"][k], eb["media"][k]
            if x.is_floating_point(): np.testing.assert_allclose(y.numpy(), x.numpy(), atol=1e-5, err_msg=f"{a.id} {k}")
            else: assert x.tolist() == y.tolist(), (a.id, k)


def test_trl_dataset_and_rewards(tiny, prepared):
    "The trainer's dataset reads the cache; box rewards are unchanged, mask rewards within the mask's resampling."
    from qoqmed.rewards import clinical_reward, processor_pixels
    from qoqmed.media import load_mask
    from qoqmed.trl_data import build_trl_dataset
    _, processor = tiny
    ds, skipped = build_trl_dataset(prepared.jsonl)
    assert len(ds) == 14 and not skipped
    px = processor_pixels(processor)
    orig, prep = read_jsonl(DEMO_DATA), read_jsonl(prepared.jsonl)
    rows = {r["id"]: r for r in ds}
    checked = 0
    for a, b in zip(orig, prep):
        if not (a.bbox or a.segmentation_path): continue
        from qoqmed.media import load_image
        sa, sb = load_image(a.images[0]).size, load_image(b.images[0]).size
        assert rows[b.id]["image_size"] == list(sb)
        for box in ([10, 10, 60, 60], [20, 150, 100, 260], [0, 0, 40, 40]):   # in model-input pixels: the same for both
            text = f"<think>look</think>\n```json\n[{{\"bbox_2d\": {box}, \"label\": \"x\"}}]\n```\n\\boxed{{{a.answer}}}"
            ka = dict(mask=load_mask(a.segmentation_path)) if a.segmentation_path else dict(bbox=a.bbox)
            kb = dict(mask=load_mask(b.segmentation_path)) if b.segmentation_path else dict(bbox=b.bbox)
            ra = clinical_reward(text, a.answer, image_size=sa, choices=a.choices, **ka, **px)
            rb = clinical_reward(text, b.answer, image_size=sb, choices=b.choices, **kb, **px)
            assert rb["accuracy"] == ra["accuracy"]
            tol = 1e-9 if a.bbox else 0.02
            assert abs(rb["iou"] - ra["iou"]) <= tol, (a.id, box, ra["iou"], rb["iou"])
            checked += 1
    assert checked >= 6


def _cli(*args):
    return subprocess.Popen([sys.executable, "-c", "import sys; from qoqmed.cli import main; sys.exit(main())", "prepare", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _scaled_demo(folder:Path, copies:int) -> Path:
    "The demo's records `copies` times over distinct copies of its media (so no two records share a file)."
    src = Path(DEMO_DATA).parent
    lines = []
    for c in range(copies):
        d = folder / f"copy{c}"
        shutil.copytree(src, d, ignore=shutil.ignore_patterns("*.jsonl", "README.md"))
        for l in Path(DEMO_DATA).read_text().splitlines():
            r = json.loads(l)
            for k in ("images", "videos", "time-series", "time_series"):
                if r.get(k): r[k] = [f"copy{c}/{p}" for p in r[k]]
            if r.get("segmentation_path"): r["segmentation_path"] = f"copy{c}/{r['segmentation_path']}"
            if r.get("id"): r["id"] = f"{r['id']}-{c}"
            lines.append(json.dumps(r))
    f = folder / "data.jsonl"; f.write_text("\n".join(lines) + "\n")
    return f


def test_cli_killed_and_resumed(tmp_path):
    "Kill `qoqmed prepare` mid-run: the rerun keeps what was finished and writes what an uninterrupted run writes."
    data = _scaled_demo(tmp_path / "data", 8)   # 112 records
    ref = _cli(str(data), str(tmp_path / "ref"), "-j", "2", "--no-progress")
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, out + err
    assert "prepared 112 records" in out

    p = _cli(str(data), str(tmp_path / "run"), "-j", "2", "--no-progress")
    log = tmp_path / "run" / PROGRESS_NAME
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 20): time.sleep(0.05)
    p.kill()   # SIGKILL: no clean-up runs; the pool workers die with their parent
    p.communicate(timeout=60)
    done = len(log.read_text().splitlines())
    assert 20 <= done < 112, done
    assert not (tmp_path / "run" / "data.jsonl").exists()

    again = _cli(str(data), str(tmp_path / "run"), "-j", "2", "--no-progress")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, out + err
    reused = int(out.split("records (")[1].split(" from")[0])
    assert reused >= 20, out
    assert (tmp_path / "run" / "data.jsonl").read_text() == (tmp_path / "ref" / "data.jsonl").read_text()


def test_cli_bad_records_and_errors(tmp_path):
    good = json.loads(Path(DEMO_DATA).read_text().splitlines()[0])
    good["images"] = [str(Path(DEMO_DATA).parent / p) for p in good["images"]]
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "images": ["gone.png"], "domain": "chest_xray"}) + "\n")
    p = _cli(str(f), str(tmp_path / "out"), "-j", "1", "--no-progress")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, out + err
    assert "skipped line 2" in out and "file not found" in out
    assert len((tmp_path / "out" / "d.jsonl").read_text().splitlines()) == 1
    p = _cli(str(tmp_path / "missing.jsonl"), str(tmp_path / "out2"))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "missing.jsonl" in err and "Traceback" not in err
    p = _cli(str(f), str(tmp_path))   # the output would overwrite the source
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "overwrite" in err
