#!/usr/bin/env bash
# The whole test suite, as README.md and .ci/run call it:
#   1. the library must equal what the notebooks export (notebooks are the source),
#   2. the notebooks must be clean (nbdev_clean changes nothing),
#   3. every notebook runs as a test (cells flagged `#| slow` / `#| gpu` skipped; add `--flags slow` to run them),
#   4. the notebooks build as docs: scripts/check_docs.py runs nbdev's doc processing (the step `nbdev_docs`/`nbdev_preview`
#      run before Quarto, executing export, import and show_doc cells) on every notebook and names each one that fails;
#      Quarto itself is not needed for it,
#   5. pytest runs what a notebook cannot (CLI, end-to-end, multi-process) and ends with its counted summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1 TRACKIO_DISABLE=1 WANDB_DISABLED=true

snapshot() { find "$@" -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha1sum; }

echo "== 1/5 nbdev_export: is qoqmed/ what the notebooks say?"
before=$(snapshot qoqmed)
nbdev_export
after=$(snapshot qoqmed)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "FAIL: qoqmed/ differed from the notebooks (nbdev_export has now rewritten it): edit the notebooks, never qoqmed/*.py, then commit both." >&2
  exit 1
fi

echo "== 2/5 nbdev_clean: are the notebooks clean?"
before=$(snapshot nbs)
nbdev_clean
after=$(snapshot nbs)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "FAIL: notebooks were not clean (nbdev_clean has now cleaned them): commit the cleaned notebooks." >&2
  exit 1
fi

echo "== 3/5 nbdev_test: every notebook runs (flags skipped: slow, gpu)"
nbdev_test --n_workers "${QOQMED_TEST_WORKERS:-2}" --timing ${NBDEV_TEST_ARGS:-}

echo "== 4/5 do the notebooks build as docs? (nbdev's doc processing, as nbdev_proc_nbs runs it)"
python scripts/check_docs.py --workers "${QOQMED_TEST_WORKERS:-2}"

echo "== 5/5 pytest tests/"
python -m pytest tests -q -p no:cacheprovider ${PYTEST_ARGS:-}
