"""Media decoded in DataLoader workers (`MediaEncodingCollator`) gives the same run as decoding in the main process: the same
prompt ids and media tensors, rewards, advantages, losses and trace, the same handling of a sample whose media fail (here inside
a worker), and an exact data position after a resume with workers. Tiny model, demo data, CPU; runs in this process."""
import hashlib, json, logging, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path

import pytest
import torch

IDS = ("demo-fundus-normal", "demo-mri-organ", "demo-ecg-normal-npy", "demo-ct-modality", "demo-ehr-vignette")


def _dataset(tmp):
    "Five demo questions and one whose image vanished after the dataset was built: six questions, three steps of two."
    from qoqmed.demo import DEMO_DATA
    from qoqmed.records import Record, read_jsonl
    from qoqmed.trl_data import build_trl_dataset
    recs = {r.id: r for r in read_jsonl(DEMO_DATA)}
    gone = Record(problem="<image>\nWhat is shown?", answer="normal", images=[str(tmp / "gone.png")], domain="fundus", id="broken")
    ds, _ = build_trl_dataset([recs[i] for i in IDS] + [gone], check="none")
    return ds


def _digest(x):
    if isinstance(x, torch.Tensor): return hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()[:16] + str(tuple(x.shape))
    return hashlib.sha256(json.dumps(x).encode()).hexdigest()[:16]


def _run(out, ds, workers, steps=3, resume=None):
    "Train the tiny model; the trainer, and what `_tokenize_prompts` returned at each generation (digests)."
    from qoqmed.model import tiny_qoqmed
    from qoqmed.trainer import QoQMedGRPOTrainer, tiny_run_config, toy_text_reward
    model, processor = tiny_qoqmed(seed=0)
    args = tiny_run_config(out, steps=steps, reward_weights=[1.0], save_strategy="steps", save_steps=1,
                           dataloader_num_workers=workers)
    t = QoQMedGRPOTrainer(model, reward_funcs=[toy_text_reward], args=args, train_dataset=ds, processing_class=processor)
    seen, tokenize = [], t._tokenize_prompts
    def record(prompts):
        ids, images, fields = tokenize(prompts)
        seen.append(dict(ids=_digest(ids), bad=list(t._bad_local), pre=[e is not None for e in t._pre_encoded],
                         fields={k: _digest(v) for k, v in fields.items()}))
        return ids, images, fields
    t._tokenize_prompts = record
    t.train(resume_from_checkpoint=resume)
    return t, seen


def _trace(out): return [json.loads(l) for l in (Path(out) / "completions.jsonl").read_text().splitlines()]
def _losses(t): return [(h["step"], h["loss"]) for h in t.state.log_history if "loss" in h]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("media")
    ds = _dataset(tmp)
    logger = logging.getLogger("qoqmed.train")
    out = {}
    for workers in (0, 2):
        class Keep(logging.Handler):
            def __init__(self): super().__init__(logging.WARNING); self.messages = []
            def emit(self, record): self.messages.append(record.getMessage())
        h = Keep(); logger.addHandler(h); level = logger.level; logger.setLevel(logging.WARNING)
        try: t, seen = _run(tmp / f"w{workers}", ds, workers)
        finally: logger.removeHandler(h); logger.setLevel(level)
        out[workers] = dict(trainer=t, seen=seen, warnings=h.messages, dir=tmp / f"w{workers}")
    out["ds"] = ds
    return out


def test_same_run_with_and_without_workers(runs):
    a, b = runs[0], runs[2]
    assert len(a["seen"]) == 3 and a["seen"] == [{**s, "pre": sa["pre"]} for s, sa in zip(b["seen"], a["seen"])]
    assert all(all(s["pre"]) for s in b["seen"]) and all(all(s["pre"]) for s in a["seen"])   # the collator's encodings were used
    assert _trace(a["dir"]) == _trace(b["dir"])                 # completions, rewards, advantages, ids, in order
    assert _losses(a["trainer"]) == _losses(b["trainer"]) and len(_losses(a["trainer"])) == 3
    for k in ("grad_norm", "reward", "data/unloadable_rollouts"):
        assert [h.get(k) for h in a["trainer"].state.log_history] == [h.get(k) for h in b["trainer"].state.log_history], k
    sa, sb = a["trainer"].model.state_dict(), b["trainer"].model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_sample_whose_media_fail_in_a_worker(runs):
    for workers in (0, 2):
        r = runs[workers]
        rows = [x for x in _trace(r["dir"]) if x["id"] == "broken"]
        assert len(rows) == 4 and {x["advantage"] for x in rows} == {0.0}
        assert r["trainer"].unloadable_samples == 4
        assert sum("media failed to load" in m and "gone.png" in m for m in r["warnings"]) == 1, r["warnings"]
        assert sum(s["bad"].count(True) for s in r["seen"]) == 4
        from qoqmed.trl_data import PRE_ENCODED_KEY
        assert PRE_ENCODED_KEY not in (Path(r["dir"]) / "completions.jsonl").read_text()   # the private key never reaches the trace


def test_media_time_is_logged(runs):
    for workers in (0, 2):
        logs = [h for h in runs[workers]["trainer"].state.log_history if "loss" in h]
        assert all(h["media/main_process_s"] >= 0 and h["media/dataloader_wait_s"] >= 0 for h in logs)
    main = lambda w: sum(h["media/main_process_s"] for h in runs[w]["trainer"].state.log_history if "loss" in h)
    assert main(0) > 0 and main(2) == 0   # with workers, the main process decodes nothing


def test_resume_with_workers_is_exact(runs, tmp_path):
    import shutil
    src = runs[2]["dir"]
    out = tmp_path / "resumed"
    shutil.copytree(src, out)
    for p in out.glob("checkpoint-*"):
        if p.name != "checkpoint-1": shutil.rmtree(p)
    t, seen = _run(out, runs["ds"], 2, resume=str(out / "checkpoint-1"))
    assert seen == runs[2]["seen"][1:]                          # steps 2 and 3 decoded and encoded as the uninterrupted run's
    assert _trace(out) == _trace(src)
    assert _losses(t) == _losses(runs[2]["trainer"])            # step 1 from the checkpoint's log history, 2 and 3 trained again
