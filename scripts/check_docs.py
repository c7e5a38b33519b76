"""Do the notebooks build as docs? Runs nbdev's doc processing (what `nbdev_proc_nbs`, `nbdev_docs` and `nbdev_preview`
run before Quarto) on every notebook, reports every notebook that fails (not only the first) and exits 1 if any does.

Why not `nbdev_proc_nbs` itself: where Quarto is missing it first tries to install Quarto (with sudo) and then runs
`pip install -e .`, neither of which a test should do. The processing is the same: `nbdev.serve_drv.main` with nbdev's
`FilterDefaults`, which executes only export, import and `show_doc` cells, as the doc build does.

    python scripts/check_docs.py [NOTEBOOK ...] [--workers N] [--keep]   # output in _proc/ (removed unless --keep)
"""
import argparse, shutil, sys, time
import subprocess
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_DRIVER = """
import sys, traceback
from pathlib import Path
from nbdev.processors import FilterDefaults
import nbdev.serve_drv
src, dst = map(Path, sys.argv[1:])
dst.parent.mkdir(parents=True, exist_ok=True)
nbdev.serve_drv.main((src, dst, FilterDefaults))
"""

def _proc(args):
    "Process one notebook in a fresh interpreter (the doc kernel replaces `__main__`, and a cell may exit): (name, error or None, seconds)."
    src, dst = args
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", _DRIVER, str(src), str(dst)], cwd=ROOT, capture_output=True, text=True)
    err = None if r.returncode == 0 else (r.stderr.strip() or r.stdout.strip() or f"exit code {r.returncode}")[-3000:]
    return src.name, err, time.time() - t0

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", help="notebooks to process (default: every notebook in nbs/)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the processed notebooks in _proc/")
    a = p.parse_args(argv)
    nbs = [Path(n).resolve() for n in a.notebooks] or sorted((ROOT/"nbs").glob("*.ipynb"))
    out = ROOT/"_proc"
    jobs = [(n, out/n.name) for n in nbs]
    results = []
    with ThreadPoolExecutor(a.workers) as pool:
        for f in as_completed([pool.submit(_proc, j) for j in jobs]):
            name, err, secs = f.result(); results.append((name, err))
            print(f"{'FAIL' if err else 'ok  '} {name} ({secs:.0f} s)", flush=True)
    if not a.keep: shutil.rmtree(out, ignore_errors=True)
    failed = [(name, err) for name, err in results if err]
    for name, err in failed: print(f"FAIL {name}: {err}\n", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} notebooks build as docs" + (f"; failed: {', '.join(n for n, _ in failed)}" if failed else ""))
    return 1 if failed else 0

if __name__ == "__main__": sys.exit(main())
