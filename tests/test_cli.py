"The `qoqmed` console command, run as a user runs it (a subprocess)."
import json, os, subprocess, sys
from pathlib import Path
import pytest

def qoqmed(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", "import sys; from qoqmed.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)

def test_help_lists_subcommands():
    r = qoqmed("--help")
    assert r.returncode == 0, r.stderr
    assert "validate" in r.stdout

def test_console_script_installed():
    from importlib.metadata import entry_points
    eps = [e for e in entry_points(group="console_scripts") if e.name == "qoqmed"]
    assert eps and eps[0].value == "qoqmed.cli:main"

def test_validate_demo_data_passes():
    from qoqmed.data import DEMO_DATA
    r = qoqmed("validate", str(DEMO_DATA))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("OK")

def test_validate_reports_every_bad_line(tmp_path):
    from qoqmed.data import DEMO_DATA, read_jsonl
    good = read_jsonl(DEMO_DATA)[0].to_dict()
    for key in ("images", "videos", "time-series", "time_series"):  # make media paths absolute so the copy still finds them
        if good.get(key): good[key] = [str((Path(DEMO_DATA).parent/p).resolve()) for p in good[key]]
    lines = [json.dumps(good), "{not json", json.dumps({**good, "domain": "astrology"}),
             json.dumps({**good, "images": ["no_such_file.png"], "domain": "fundus"})]
    f = tmp_path/"mixed.jsonl"; f.write_text("\n".join(lines) + "\n")
    r = qoqmed("validate", str(f))
    assert r.returncode == 1
    for n in (2, 3, 4): assert f"mixed.jsonl:{n}:" in r.stdout, r.stdout
    assert "mixed.jsonl:1:" not in r.stdout
    assert "4 records, 3 with problems" in r.stdout
    j = json.loads(qoqmed("validate", "--json", str(f)).stdout)
    assert j["bad_records"] == 3 and {p["line"] for p in j["problems"]} == {2, 3, 4}

def test_validate_missing_file(tmp_path):
    "A file that cannot be checked is exit 2 (could not run), not 1 (problems found): one line on stderr."
    r = qoqmed("validate", str(tmp_path/"nope.jsonl"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "nope.jsonl" in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert qoqmed("validate").returncode == 2   # bad arguments: argparse's usage error


def test_validate_jobs_fast_and_progress(tmp_path):
    "-j 1 and -j 2 report the same problems; --fast finds these too; the bar goes to stderr only when forced (not a tty here)."
    from qoqmed.data import DEMO_DATA, read_jsonl
    good = read_jsonl(DEMO_DATA)[0].to_dict()
    good["images"] = [str((Path(DEMO_DATA).parent/p).resolve()) for p in good["images"]]
    lines = [json.dumps(good), "{not json", json.dumps({**good, "images": ["gone.png"], "domain": "fundus"}),
             json.dumps({**good, "bbox": [0, 0, 5000, 10]})] * 5
    f = tmp_path/"m.jsonl"; f.write_text("\n".join(lines) + "\n")
    reports = {}
    for argv in (["-j", "1"], ["-j", "2"], ["--jobs", "2", "--fast"]):
        r = qoqmed("validate", "--json", *argv, str(f))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "validate (" not in r.stderr   # no progress bar: stderr is not a terminal
        reports[" ".join(argv)] = j = json.loads(r.stdout)
        assert j["workers"] == int(argv[1]) and j["mode"] == ("fast" if "--fast" in argv else "full") and j["records_per_second"] > 0
    assert reports["-j 1"]["problems"] == reports["-j 2"]["problems"] == reports["--jobs 2 --fast"]["problems"]
    assert {p["line"] for p in reports["-j 2"]["problems"]} == {n for n in range(1, 21) if n % 4 != 1}
    r = qoqmed("validate", "--progress", "-j", "2", str(f))
    assert r.returncode == 1 and "validate (full, 2 workers)" in r.stderr and "rec/s" in r.stderr, r.stderr
    assert "records/s (full, 2 workers" in r.stdout.splitlines()[-1]
    assert "validate (" not in qoqmed("validate", "--no-progress", str(f)).stderr
    h = qoqmed("validate", "--help").stdout
    for flag in ("-j N, --jobs N", "--fast", "--no-progress", "--max-frames", "2.61 M"): assert flag in h, flag


def test_validate_never_aborts(tmp_path):
    "Wrong types, a non-UTF-8 line and a broken DICOM: every line is reported, the run goes to the end, exit 1."
    import pydicom
    from pydicom.data import get_testdata_file
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm")); ds.WindowWidth = 0; ds.WindowCenter = 40
    ds.save_as(tmp_path/"ww0.dcm")
    lines = [b'{"problem": 42, "answer": "a", "domain": "ct"}', b'{"problem": ["a"], "answer": "a", "domain": "ct"}',
             '{"problem": "caf\u00e9 <image>", "answer": "a", "domain": "ct", "images": ["x.png"]}'.encode("latin-1"),
             b'\xff\xfe not utf-8 at all', b'{"problem": "<image> q", "answer": "a", "domain": "ct", "images": ["ww0.dcm"]}',
             b'{"problem": "q", "answer": "a", "domain": "ehr"}']
    f = tmp_path/"bad.jsonl"; f.write_bytes(b"\n".join(lines) + b"\n")
    r = qoqmed("validate", "--json", str(f))
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["records"] == 6 and {p["line"] for p in report["problems"] if p["severity"] == "error"} == {1, 2, 3, 4, 5}


def test_errors_are_one_line_before_any_model_loads(tmp_path, tiny_model_dir):
    r = qoqmed("infer", "--model", str(tiny_model_dir), "--image", str(tmp_path/"missing.png"), "--question", "What is shown?")
    assert r.returncode == 2 and "missing.png" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = qoqmed("eval", "--model", str(tiny_model_dir), "--data", str(tmp_path/"none.jsonl"), "--out", str(tmp_path/"ev"))
    assert r.returncode == 2 and "none.jsonl" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    cfg = tmp_path/"c.yaml"; cfg.write_text("model: {tiny: true}\ntraining: {max_step: 2}\n")
    r = qoqmed("train", "--config", str(cfg))
    assert r.returncode == 2 and "training.max_step" in r.stderr and "max_steps" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from qoqmed.model import tiny_qoqmed
    d = tmp_path_factory.mktemp("tiny_model")
    model, processor = tiny_qoqmed(seed=0)
    model.save_pretrained(d); processor.save_pretrained(d)
    return d

def test_infer_eval_compare_end_to_end(tiny_model_dir, tmp_path):
    "A user's evaluation session on the tiny model: infer one ECG, evaluate the demo set twice (resume), compare."
    from qoqmed.data import DEMO_DATA, read_jsonl
    ecg = next(r for r in read_jsonl(DEMO_DATA) if r.time_series).time_series[0]
    r = qoqmed("infer", "--model", str(tiny_model_dir), "--ecg", ecg, "--question", "What is the rhythm?",
               "--max-new-tokens", "8", "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert {"reasoning", "boxes", "diagnosis", "completion"} <= set(out)
    assert qoqmed("infer", "--model", str(tiny_model_dir), "--question", "q?").returncode == 2  # no study given

    ev = tmp_path/"eval"
    args = ("eval", "--model", str(tiny_model_dir), "--data", str(DEMO_DATA), "--out", str(ev), "--limit", "3",
            "--max-new-tokens", "8", "--device", "cpu", "--no-progress")
    r = qoqmed(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    for f in ("traces.jsonl", "metrics.md", "metrics.csv", "metrics.png"): assert (ev/f).exists(), f
    n = len((ev/"traces.jsonl").read_text().splitlines())
    assert n == 3
    assert qoqmed(*args).returncode == 0  # rerun resumes: nothing generated twice
    assert len((ev/"traces.jsonl").read_text().splitlines()) == n

    r = qoqmed("compare", str(ev), str(ev), "--labels", "a,b", "--out", str(tmp_path/"cmp"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path/"cmp"/"compare.png").exists()

def test_demo_command(tmp_path):
    "The README's main command, shortened to one step."
    r = qoqmed("demo", "--out", str(tmp_path/"run"), "--steps", "1", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "learns nothing clinical" in r.stdout
    for f in ("metrics.csv", "metrics.jsonl", "reward_by_domain.png", "temperature_by_domain.png", "completions.jsonl", "final"):
        assert (tmp_path/"run"/f).exists(), f
