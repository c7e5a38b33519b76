"""Run notebooks the way `nbdev_test` does and save their outputs into them, so the printed results and plots that teach are
there for readers (on GitHub, in JupyterLab, in the docs).

    python scripts/run_notebooks.py nbs/00_media.ipynb [more.ipynb ...]   # then: nbdev_clean

Cells flagged with a `tst_flags` flag (`#| slow`, `#| gpu`) and the closing `nbdev_export()` cell are not run (their saved
outputs are dropped), exactly as `nbdev_test` skips them. tqdm progress bars on stderr are not saved. A cell with `#| output: false` (Quarto's directive: no output in
the docs) runs but keeps no output. An output over `--max-kb` (default 300 KB) is dropped with a note, so a notebook never
swells with a huge image or table. Stops at the first failing cell, printing its traceback.
"""
import argparse, base64, json, os, re, sys
from pathlib import Path


def _flags(cell) -> set:
    "The `#| ...` directive words of a code cell."
    out = set()
    for line in cell.source.splitlines():
        s = line.strip()
        if not s.startswith("#|"): break
        out.update(s[2:].replace(":", " ").split())
    return out


_PROGRESS = re.compile(r"\d+%\|.*\|")   # a tqdm bar: "Loading weights:  50%|#####     | 43/86 [...]"

def _without_progress(output):
    "A stderr stream without tqdm progress bars (they teach nothing and change every run); None if nothing else is left."
    if output.get("output_type") != "stream" or output.get("name") != "stderr": return output
    text = "".join(output["text"]) if isinstance(output["text"], list) else output["text"]
    lines = [l for l in re.split(r"[\r\n]", text) if l.strip() and not _PROGRESS.search(l)]
    if not lines: return None
    return {**output, "text": "\n".join(lines) + "\n"}


def _size(output) -> int:
    return len(json.dumps(dict(output)))


def run(path:Path, skip:set, max_kb:int) -> None:
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    nb = read_nb(path)
    def no_eval(cell):
        if cell.cell_type != "code": return True
        words = _flags(cell)
        if "nbdev_export(" in cell.source or (words & skip) or ("eval" in words and "false" in words):
            cell.outputs = []; return True
        return False
    shell = CaptureShell(path)
    cwd = os.getcwd(); os.chdir(path.parent)
    os.environ["IN_TEST"] = "1"
    try: shell.run_all(nb, exc_stop=True, preproc=no_eval)
    except Exception:
        sys.stderr.write(shell.prettytb(fname=path) + "\n"); raise SystemExit(f"{path}: a cell failed; outputs not saved")
    finally: os.chdir(cwd)
    for cell in nb.cells:
        if cell.cell_type != "code": continue
        words = _flags(cell)
        if "output" in words and "false" in words: cell.outputs = []
        kept = []
        for o in cell.get("outputs", []):
            o = _without_progress(o)
            if o is None: continue
            if _size(o) > max_kb * 1024:
                kept.append(dict(output_type="stream", name="stdout", text=[f"[output of {_size(o) // 1024} KB not saved]\n"]))
            else: kept.append(o)
        if "outputs" in cell: cell.outputs = kept
    write_nb(nb, path)
    print(f"{path}: outputs saved")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--max-kb", type=int, default=300, help="largest output kept, in KB")
    a = p.parse_args(argv)
    from nbdev.config import get_config
    skip = set(get_config().get("tst_flags", "").split())
    for nb in a.notebooks: run(nb.resolve(), skip, a.max_kb)


if __name__ == "__main__": main()
