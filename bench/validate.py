"""How fast `qoqmed validate` checks a dataset: records/s in full (decode) and fast (headers) mode, 1 and 2 workers.

Every record points at its OWN copy of a file (copies under distinct paths in a temporary folder), so no path is ever
decoded twice. Two datasets: the demo's 14 records (images, 3-D studies, ECGs, a mask, a box) and a mix of mostly
2-D PNG/JPEG images, as CLIMB is. Prints a markdown table with the speed-up of 2 workers over 1 and the projected
time for CLIMB's 2.61 M records, and records per CPU-second (what the rate would be per core on an idle machine: the
wall-clock rates depend on what else runs), then the per-kind cost of one record (serial, ms).

    python bench/validate.py            # about 2 minutes
    python bench/validate.py --quick    # under 30 s (tests/test_bench_validate.py)
"""
import argparse, json, os, shutil, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from qoqmed.records import validate_jsonl, _cpu_count  # noqa: E402

DEMO = ROOT / "qoqmed" / "demo_data"
CLIMB = 2_610_000
MEDIA_KEYS = ("images", "videos", "time-series", "segmentation_path")
IMAGE_IDS = ("demo-cxr-view", "demo-fundus-normal", "demo-fundus-eye", "demo-fundus-dr", "demo-pathology-stain",
             "demo-ct-modality", "demo-mr-modality")  # 2 PNG, 3 JPEG (one with a mask), 2 DICOM slices

def demo_records() -> list[dict]:
    return [json.loads(l) for l in (DEMO / "demo.jsonl").read_text().splitlines() if l.strip()]

def build(out:Path, records:list[dict], n:int) -> Path:
    "A JSONL of `n` records cycling through `records`, each with its own copy of the demo files it names."
    lines = []
    for k in range(n):
        d = dict(records[k % len(records)]); d["id"] = f"{d['id']}-{k}"
        for key in MEDIA_KEYS:
            if not d.get(key): continue
            paths = [d[key]] if isinstance(d[key], str) else d[key]
            new = []
            for p in paths:
                src, dst = DEMO / p, out / f"c{k}" / p
                dst.parent.mkdir(parents=True, exist_ok=True)
                srcs = [src] if src.exists() else [Path(str(src) + e) for e in (".hea", ".dat")]  # a WFDB record: both files
                for s in srcs: shutil.copyfile(s, dst.parent / s.name)
                new.append(f"c{k}/{p}")
            d[key] = new[0] if isinstance(d[key], str) else new
        lines.append(json.dumps(d))
    path = out / "data.jsonl"; path.write_text("\n".join(lines) + "\n")
    return path

def _cpu() -> float:
    t = os.times(); return t.user + t.system + t.children_user + t.children_system   # workers count once the pool is shut down

def rate(path:Path, workers:int, mode:str, per_cpu=False) -> float:
    "Records/s of one `validate_jsonl` run (or records per CPU-second, which other load on the machine barely changes)."
    n = sum(1 for l in path.read_text().splitlines() if l.strip())
    t, c = time.perf_counter(), _cpu()
    probs = validate_jsonl(path, workers=workers, mode=mode, progress=False)
    dt, dc = time.perf_counter() - t, _cpu() - c
    assert probs == [], [str(p) for p in probs[:3]]
    return (n / dt, n / dc) if per_cpu else n / dt

def projected(r:float) -> str:
    s = CLIMB / r
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"

def per_kind(records:list[dict], out:Path, repeats:int) -> list[tuple]:
    "(record id, what it holds, full ms, fast ms) for one record of each kind, serially, over distinct copies."
    rows = []
    for r in records:
        what = ", ".join(f"{k}: {Path(v if isinstance(v, str) else v[0]).name}" for k in MEDIA_KEYS if (v := r.get(k))) or "text only"
        folder = out / r["id"]; folder.mkdir()
        path = build(folder, [r], repeats)
        ms = {m: 1000 / rate(path, 1, m) for m in ("full", "fast")}
        rows.append((r["id"], what, ms["full"], ms["fast"]))
    return rows

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small datasets, a smoke run under 30 s")
    args = ap.parse_args(argv)
    n_demo, n_images, repeats = (56, 140, 4) if args.quick else (700, 2100, 20)
    recs = demo_records()
    images = [r for r in recs if r["id"] in IMAGE_IDS]
    print(f"cores: {_cpu_count()}, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = {"demo mix (14 kinds)": build(tmp / "demo", recs, n_demo),
                "2-D images (PNG/JPEG, 2 DICOM of 7)": build(tmp / "images", images, n_images)}
        warm = build(tmp / "warm", recs, len(recs))
        for mode in ("full", "fast"): validate_jsonl(warm, workers=1, progress=False, mode=mode)  # the decoders' imports
        for p in data.values(): validate_jsonl(p, workers=1, progress=False, mode="fast")  # page cache
        print("\n| dataset | records | mode | 1 worker rec/s | 2 workers rec/s | × | 2.61 M records at 2 workers "
              "| rec per CPU-s, 1 / 2 workers |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        for name, path in data.items():
            n = sum(1 for _ in path.open())
            for mode in ("full", "fast"):
                (r1, c1), (r2, c2) = rate(path, 1, mode, True), rate(path, 2, mode, True)
                print(f"| {name} | {n:,} | {mode} | {r1:,.0f} | {r2:,.0f} | {r2 / r1:.2f} | {projected(r2)} | {c1:,.0f} / {c2:,.0f} |")
        (tmp / "kinds").mkdir()
        print("\n| record (one of each kind, serial) | media | full ms | fast ms |")
        print("|---|---|---:|---:|")
        for rid, what, full, fast in per_kind(recs, tmp / "kinds", repeats):
            print(f"| {rid} | {what} | {full:.1f} | {fast:.2f} |")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

if __name__ == "__main__": main()
