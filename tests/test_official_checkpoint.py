"Checkpoints in the official QoQ-Med layout: sharded folders, partial ECG weights, the infer path, a fresh process, saving back."
import json, os, shutil, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from qoqmed.model import (QoQMedForConditionalGeneration, QoQMedProcessor, checkpoint_layout, checkpoint_tensor_shapes,
                          save_tiny_qwen, tiny_qoqmed)

FIXTURE = Path(__file__).parent/"fixtures"/"official_qoqmed"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _copy(tmp_path, keep=lambda k: True, name="copy") -> Path:
    "The fixture folder copied, with only the tensors `keep` accepts."
    target = tmp_path/name
    target.mkdir()
    for f in FIXTURE.iterdir():
        if f.name != "model.safetensors": shutil.copy(f, target/f.name)
    save_file({k: v for k, v in load_file(FIXTURE/"model.safetensors").items() if keep(k)}, target/"model.safetensors", metadata={"format": "pt"})
    return target


@pytest.fixture(scope="module")
def official():
    return QoQMedForConditionalGeneration.from_pretrained(FIXTURE, dtype=torch.float32), QoQMedProcessor.from_pretrained(FIXTURE)


def test_sharded_official_folder_loads_every_tensor(official, tmp_path):
    "A sharded save (model.safetensors.index.json, as the released 868-tensor checkpoints are) loads with every tensor."
    model, processor = official
    folder = model.save_official(tmp_path/"sharded", processor, max_shard_size="5MB")
    index = json.loads((folder/"model.safetensors.index.json").read_text())
    assert not (folder/"model.safetensors").exists() and len(set(index["weight_map"].values())) > 1
    assert sorted(index["weight_map"]) == sorted(checkpoint_tensor_shapes(FIXTURE))
    assert checkpoint_layout(folder) == "official"
    again, info = QoQMedForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    assert (list(info["missing_keys"]), list(info["unexpected_keys"])) == ([], [])
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_config_without_the_official_fields_is_still_recognised_by_its_tensors(tmp_path):
    folder = _copy(tmp_path)
    config = json.loads((folder/"config.json").read_text())
    del config["time_series_token_id"]; config["architectures"] = ["Qwen2_5_VLForConditionalGeneration"]
    (folder/"config.json").write_text(json.dumps(config))
    assert checkpoint_layout(folder) == "official"
    model = QoQMedForConditionalGeneration.from_pretrained(folder)
    assert (model.config.n_ecg_tokens, model.config.ecg_token_id, model.config.ecg_config.embed_dim) == (1, 151665, 64)


def test_partial_ecg_weights_are_an_error(tmp_path):
    "The encoder present but the projection gone (or one encoder tensor gone): an error, not a random projection."
    no_projection = _copy(tmp_path, lambda k: not k.startswith("time_series_embedding.linear."), "no_projection")
    with pytest.raises(ValueError, match=r"no time_series_embedding\.linear\.\*"): QoQMedForConditionalGeneration.from_pretrained(no_projection)
    one_gone = _copy(tmp_path, lambda k: k != "time_series_embedding.encoder.norm.weight", "one_gone")
    with pytest.raises(ValueError, match=r"ECG weights missing from the checkpoint: \['model\.ecg\.encoder\.norm\.weight'\]"):
        QoQMedForConditionalGeneration.from_pretrained(one_gone)


def test_a_projection_of_the_wrong_width_is_an_error(tmp_path):
    folder = _copy(tmp_path, lambda k: not k.startswith("time_series_embedding.linear."))
    weights = load_file(folder/"model.safetensors")
    weights.update({"time_series_embedding.linear.weight": torch.zeros(48, 64), "time_series_embedding.linear.bias": torch.zeros(48)})
    save_file(weights, folder/"model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"time_series_embedding\.linear\.weight has shape \(48, 64\), expected \(32, 64\)"):
        QoQMedForConditionalGeneration.from_pretrained(folder)


def test_plain_qwen_points_to_from_qwen(tmp_path):
    save_tiny_qwen(tmp_path)
    for cls in (QoQMedForConditionalGeneration, QoQMedProcessor):
        with pytest.raises(ValueError, match=rf"plain Qwen2\.5-VL checkpoint.*{cls.__name__}\.from_qwen"): cls.from_pretrained(tmp_path)
    assert QoQMedForConditionalGeneration.from_qwen(tmp_path).config.n_ecg_tokens == 50   # from_qwen: still the way to a new bridge


def test_our_default_model_refuses_the_official_layout_and_keeps_its_own(tmp_path):
    model, processor = tiny_qoqmed()
    with pytest.raises(ValueError, match="has n_ecg_tokens=50"): model.save_official(tmp_path/"no")
    with pytest.raises(ValueError, match="has n_ecg_tokens=50"): processor.save_official(tmp_path/"no")
    model.save_pretrained(tmp_path/"ours"); processor.save_pretrained(tmp_path/"ours")
    reloaded, reloaded_processor = QoQMedForConditionalGeneration.from_pretrained(tmp_path/"ours"), QoQMedProcessor.from_pretrained(tmp_path/"ours")
    assert (reloaded.config.n_ecg_tokens, reloaded_processor.n_ecg_tokens) == (50, 50)
    messages = [{"role": "user", "content": [{"type": "time-series"}, {"type": "text", "text": "Rhythm?"}]}]
    assert "<|vision_start|><|time_series_pad|><|vision_end|>Rhythm?" in reloaded_processor.apply_chat_template(messages)


def test_infer_on_an_official_checkpoint():
    "`qoqmed infer`'s path: load_model + infer, with the data layer's `time_series` items, gives the official one-token prompt."
    from qoqmed.evaluate import infer_from_dir
    out = infer_from_dir(FIXTURE, device="cpu", question="What rhythm is this?", ecg=FIXTURE/"ecg_input_8x2500.npy", max_new_tokens=3)
    prompt = out["trace"]["prompt"]
    assert prompt.count("<|time_series_pad|>") == 1 and "<|vision_start|><|time_series_pad|>" not in prompt


LOAD = textwrap.dedent('''
    import json, sys, numpy as np, torch
    import qoqmed.model
    from qoqmed.model import QoQMedForConditionalGeneration, QoQMedProcessor
    model = QoQMedForConditionalGeneration.from_pretrained(sys.argv[1], dtype=torch.float32)
    feature = model.get_time_series_features(torch.from_numpy(np.load(sys.argv[1] + "/ecg_input_8x2500.npy"))[None])[0]
    print(json.dumps({"n": model.config.n_ecg_tokens, "err": float((feature - torch.from_numpy(np.load(sys.argv[1] + "/ecg_feature.npy"))).abs().max()),
                      "template": QoQMedProcessor.from_pretrained(sys.argv[1]).chat_template}))
''')

def test_fresh_process_reads_the_official_layout():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "-c", LOAD, str(FIXTURE)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["n"] == 1 and out["err"] < 1e-5
    assert out["template"] == json.loads((FIXTURE/"chat_template.json").read_text())["chat_template"]
