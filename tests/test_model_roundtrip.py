"A saved QoQ-Med directory loads in a *fresh* process with only `import qoqmed.model` (no trust_remote_code) and generates the same tokens."
import json, os, subprocess, sys, textwrap
from pathlib import Path

FIXTURE = Path(__file__).parent/"fixtures"/"ecg_jepa"/"input_8x2500.npy"

PROMPT = textwrap.dedent('''
    import numpy as np, skimage.data
    ecg = np.load(r"{fixture}")
    messages = [{"role": "user", "content": [{"type": "image", "image": skimage.data.retina()},
                 {"type": "time_series", "time_series": ecg}, {"type": "text", "text": "Diagnosis?"}]}]
''')

SAVE = PROMPT + textwrap.dedent('''
    import json, sys, torch
    from qoqmed.model import tiny_qoqmed
    model, processor = tiny_qoqmed(seed=1)
    model.save_pretrained(sys.argv[1]); processor.save_pretrained(sys.argv[1])
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    print(json.dumps(model.generate(**inputs, max_new_tokens=8, do_sample=False)[0].tolist()))
''')

LOAD = PROMPT + textwrap.dedent('''
    import json, sys
    import qoqmed.model  # registers the classes with the Auto factories
    from transformers import AutoModelForImageTextToText, AutoProcessor
    model, info = AutoModelForImageTextToText.from_pretrained(sys.argv[1], output_loading_info=True)
    processor = AutoProcessor.from_pretrained(sys.argv[1])
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    print(json.dumps({"type": type(model).__name__, "processor": type(processor).__name__,
                      "missing": list(info["missing_keys"]), "unexpected": list(info["unexpected_keys"]),
                      "tokens": model.generate(**inputs, max_new_tokens=8, do_sample=False)[0].tolist()}))
''')

def _run(code:str, folder) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "-c", code.replace("{fixture}", str(FIXTURE)), str(folder)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]

def test_round_trip_in_a_fresh_process(tmp_path):
    before = json.loads(_run(SAVE, tmp_path))
    after = json.loads(_run(LOAD, tmp_path))
    assert (after["type"], after["processor"]) == ("QoQMedForConditionalGeneration", "QoQMedProcessor")
    assert after["missing"] == [] and after["unexpected"] == []
    assert after["tokens"] == before
