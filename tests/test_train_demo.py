"`run_demo` (what `qoqmed demo` runs) writes the whole run folder and says plainly what it proves."
import json, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path


def test_run_demo(tmp_path, capsys):
    from qoqmed.train import run_demo, DRPO_STATE_NAME
    paths = run_demo(tmp_path / "demo", steps=3, progress=False)
    out = capsys.readouterr().out
    assert "learns nothing clinical" in out and str(paths["run"]) in out
    for key in ("metrics_jsonl", "metrics_csv", "reward_plot", "temperature_plot", "completions"):
        assert Path(paths[key]).is_file() and Path(paths[key]).stat().st_size > 0, key
    assert Path(paths["reward_plot"]).read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(l) for l in Path(paths["completions"]).read_text().splitlines()]
    assert len(rows) == 3 * 8 and {"domain", "completion", "rewards", "advantage"} <= set(rows[0])
    metrics = [json.loads(l) for l in Path(paths["metrics_jsonl"]).read_text().splitlines()]
    assert any(k.startswith("drpo/") and k.endswith("/T_d") for m in metrics for k in m)
    assert (Path(paths["final_model"]) / "config.json").is_file()
    assert (Path(paths["checkpoint"]) / DRPO_STATE_NAME).is_file()
