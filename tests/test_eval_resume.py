"""`evaluate` killed mid-run (a real SIGKILL of another process) resumes where it stopped: no id lost, none evaluated twice.

What the notebook cannot test: a process dying while it appends to traces.jsonl. Run: `pytest tests/test_eval_resume.py -v`.
"""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from qoqmed.evaluate import evaluate, example_completion, _image_sizes
    class Slow:
        "Answers with the example completions, slowly, and logs every id it is asked about."
        settings = {"scripted": True}
        def __call__(self, records, inputs):
            with open(sys.argv[3], "a") as log: log.write("".join(r.id + "\\n" for r in records))
            time.sleep(float(sys.argv[4]))
            sizes = [_image_sizes(x) for x in inputs]
            return [r.problem for r in records], [example_completion(r, s[0] if s else None) for r, s in zip(records, sizes)]
    evaluate(Slow(), sys.argv[1], sys.argv[2], batch_size=2, progress=False)
''')


def test_kill_and_resume(tmp_path):
    from qoqmed.data import DEMO_DATA, read_jsonl
    ids = [r.id for r in read_jsonl(DEMO_DATA)]
    out, log, script = tmp_path/"eval", tmp_path/"asked.log", tmp_path/"run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, str(script), str(DEMO_DATA), str(out), str(log), "1.0"], env=env)
    traces = out/"traces.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not traces.is_file() or len(traces.read_text().splitlines()) < 4): time.sleep(0.05)
    proc.send_signal(signal.SIGKILL); proc.wait()
    done_before = [json.loads(l)["id"] for l in traces.read_text().splitlines() if l.strip()]
    assert 4 <= len(done_before) < len(ids), f"the kill came too late or too early: {len(done_before)} traces"
    assert not (out/"metrics.csv").exists()
    log.write_text("")
    subprocess.run([sys.executable, str(script), str(DEMO_DATA), str(out), str(log), "0"], env=env, check=True, timeout=300)
    asked_after = log.read_text().split()
    assert not set(asked_after) & set(done_before), "finished ids were generated again"
    final = [json.loads(l) for l in traces.read_text().splitlines()]
    assert sorted(t["id"] for t in final) == sorted(ids) and all(t["status"] == "ok" for t in final)
    assert (out/"metrics.csv").is_file() and (out/"metrics.png").is_file()
