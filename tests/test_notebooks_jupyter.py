"Notebooks behave in JupyterLab: they name their kernel, and saving one (through nbdev's Jupyter save hook) leaves it clean."
import copy, json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_names_its_kernel(nb):
    "A notebook without a kernelspec makes JupyterLab ask for a kernel on every open, and autosave then adds one (a git change)."
    spec = json.loads(nb.read_text())["metadata"].get("kernelspec")
    assert spec == {"display_name": "python3", "language": "python", "name": "python3"}, f"{nb.name}: kernelspec {spec}"


def test_settings_turn_on_the_jupyter_save_hook():
    from nbdev.config import get_config
    assert get_config(path=ROOT).jupyter_hooks, "settings.ini: jupyter_hooks must be True, so saving in JupyterLab cleans the notebook"


def test_saving_in_jupyterlab_leaves_the_notebook_clean(tmp_path):
    "What JupyterLab adds on run + save (execution counts, language_info, its kernel display name) is removed by the save hook."
    import nbformat
    from nbdev.clean import clean_jupyter
    src = ROOT / "nbs" / "06_drpo.ipynb"
    nb = json.loads(src.read_text())
    ran = copy.deepcopy(nb)
    for i, c in enumerate(ran["cells"]):
        if c["cell_type"] == "code":
            c["execution_count"] = i + 1
            c["metadata"] = {"scrolled": True, "tags": []}
            for o in c.get("outputs", []):
                if "execution_count" in o: o["execution_count"] = i + 1
    ran["metadata"]["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    ran["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    model = {"type": "notebook", "content": ran}
    clean_jupyter(path=str(src), model=model)   # what Jupyter's ContentsManager.pre_save_hook calls (nbdev_install_hooks)
    saved = tmp_path / "saved.ipynb"
    nbformat.write(nbformat.from_dict(model["content"]), str(saved))   # how Jupyter writes the file
    assert saved.read_text() == src.read_text()   # byte for byte: scripts/test.sh finds it clean
