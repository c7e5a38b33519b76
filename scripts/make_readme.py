#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb (the landing page), so the two always say the same thing.

nbdev's own `nbdev_readme` renders through Quarto; this does the same for the markdown and code cells without it.
Run `python scripts/make_readme.py` after editing the landing notebook; tests/test_repo.py checks they agree."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def readme_text(nb_path=ROOT/"nbs"/"index.ipynb") -> str:
    cells = json.loads(Path(nb_path).read_text(encoding="utf-8"))["cells"]
    parts, code = [], []   # consecutive code cells (an import cell and the code using it) make one block
    def flush():
        if code: parts.append("```python\n" + "\n".join(code) + "\n```"); code.clear()
    for c in cells:
        src = "".join(c["source"]).strip("\n")
        if not src or src.startswith("#| hide"): continue
        if c["cell_type"] == "markdown": flush(); parts.append(src)
        else: code.extend(l for l in src.splitlines() if not l.startswith("#|"))
    flush()
    return "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    out = ROOT/"README.md"
    if "--check" in sys.argv: sys.exit(0 if out.read_text(encoding="utf-8") == readme_text() else "README.md differs from nbs/index.ipynb: run python scripts/make_readme.py")
    out.write_text(readme_text(), encoding="utf-8"); print(f"wrote {out}")
