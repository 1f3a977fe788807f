"""Every notebook is a test, executed the way a reader runs it: plain Jupyter "Run all" (nbclient, one kernel per
notebook, every cell in order, `#| slow` and `#| cuda` cells included), *alone*: the notebook is copied into an empty
folder outside the checkout and runs there with the installed package, as on Colab after opening it from its badge (no
`images/`, no `../runs`, no `../tests`; `IN_PLACE` lists the chapters that still need the checkout around them and
runs those inside `nbs/`; `FBP_NB_IN_PLACE=1` runs every notebook inside `nbs/` as before), with no `FBP_DATA_ROOT` set and each
notebook's `RUN_REAL` flag as committed (off). GPU cells must then be no-ops (`if gpu_cell(...)`), real-data cells
must skip or stay short, and long real trainings must sit behind `RUN_REAL`.

`nbdev_test` (which skips `#| slow` and `#| cuda` cells) keeps working: `test_nbdev_test` runs it on one notebook, and
`FBP_NB_RUNNER=nbdev pytest tests/test_notebooks.py` runs every notebook through it instead (FBP_TEST_FLAGS="slow"
adds flags, as before)."""
import os, pathlib, re, shutil, subprocess, sys, time
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))

def test_found_notebooks():
    names = [p.stem for p in NBS]
    for required in ('index', '00_ssm', '01_scan', '02_mamba'): assert required in names, f'missing nbs/{required}.ipynb'

def test_run_real_flags_are_off():
    "Long runs are opt-in: every `RUN_REAL = ...` / `RUN_LONG = ...` assignment in a notebook is committed as False."
    import nbformat
    for nb in NBS:
        for cell in nbformat.read(nb, as_version=4).cells:
            for m in re.finditer(r'^(?:RUN_REAL|RUN_LONG)\s*=\s*(\S+)', cell.source if cell.cell_type == 'code' else '', flags=re.M):
                assert m.group(1) == 'False', f'{nb.name}: RUN_REAL/RUN_LONG must be committed as False, found {m.group(0)!r}'

def _nbdev_test(nb, flags=()):
    exe = shutil.which('nbdev_test', path=os.path.dirname(sys.executable)) or shutil.which('nbdev_test')
    assert exe, 'nbdev_test not found: pip install -e ".[dev]"'
    cmd = [exe, '--path', str(nb), '--n_workers', '0', '--do_print']
    if flags: cmd += ['--flags', ' '.join(flags)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    out = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0 and 'Some notebooks failed' not in out, f'{nb.name} failed under nbdev_test:\n{out}'

# Chapters that do not run alone yet (they read files of the checkout without a guard or write into nbs/images):
# they run inside nbs/ until fixed. Remove an entry once its notebook runs in an empty folder.
IN_PLACE = {   # 09 and 12 run alone since they read the committed records and save figures through fbp_nb.colab.figure_path
    '13_interpret': "alone, the Grad-CAM energy check fails ('lower' map of trained variant A: 0.187 of the energy on the face, "
                    "not above the constant map); inside nbs/ it passes; the cause was not found yet",
}

def _run_plain(nb, monkeypatch, folder=None):
    "Run all cells of `nb` with nbclient; in `folder` (a copy of the notebook alone there) or, with None, inside nbs/."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    monkeypatch.delenv('FBP_DATA_ROOT', raising=False); monkeypatch.delenv('FBP_DATA', raising=False)
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    if folder is not None:
        folder = pathlib.Path(folder); folder.mkdir(parents=True, exist_ok=True)
        assert not folder.resolve().is_relative_to(ROOT) and not any(folder.iterdir()), 'run alone: an empty folder outside the checkout'
        nb = pathlib.Path(shutil.copy(nb, folder / nb.name))
    book = nbformat.read(nb, as_version=4)
    client = NotebookClient(book, timeout=1200, kernel_name='python3', resources={'metadata': {'path': str(nb.parent)}})
    try: client.execute()
    except CellExecutionError as e:
        where = f'alone in an empty folder ({nb.parent})' if folder is not None else 'inside nbs/'
        pytest.fail(f'{nb.name}: "Run all" stops, run {where}:\n{str(e)[-4000:]}')

def _alone(nb) -> bool: return nb.stem not in IN_PLACE and not os.environ.get('FBP_NB_IN_PLACE')

@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb, monkeypatch, tmp_path):
    t = time.time()
    if os.environ.get('FBP_NB_RUNNER') == 'nbdev': _nbdev_test(nb, os.environ.get('FBP_TEST_FLAGS', '').split())
    else: _run_plain(nb, monkeypatch, tmp_path / 'alone' if _alone(nb) else None)
    print(f"{nb.name}: {time.time() - t:.1f}s {'alone in an empty folder' if _alone(nb) else 'inside nbs/'}")

def test_in_place_list_is_current():
    "Every IN_PLACE entry names a notebook of nbs/ (a renamed or fixed chapter leaves the list)."
    assert set(IN_PLACE) <= {p.stem for p in NBS}, set(IN_PLACE) - {p.stem for p in NBS}

def test_nbdev_test():
    "nbdev's own runner still works (it skips the `#| slow` and `#| cuda` cells)."
    _nbdev_test(ROOT / 'nbs' / '00_ssm.ipynb')
