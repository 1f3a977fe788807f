"""Every notebook is a test, executed the way a reader runs it: plain Jupyter "Run all" (nbclient, one kernel per
notebook, every cell in order, `#| slow` and `#| cuda` cells included), with no `FBP_DATA_ROOT` set and each
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

def _run_plain(nb, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    monkeypatch.delenv('FBP_DATA_ROOT', raising=False); monkeypatch.delenv('FBP_DATA', raising=False)
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    book = nbformat.read(nb, as_version=4)
    client = NotebookClient(book, timeout=1200, kernel_name='python3', resources={'metadata': {'path': str(nb.parent)}})
    try: client.execute()
    except CellExecutionError as e: pytest.fail(f'{nb.name}: "Run all" stops:\n{str(e)[-4000:]}')

@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb, monkeypatch):
    t = time.time()
    if os.environ.get('FBP_NB_RUNNER') == 'nbdev': _nbdev_test(nb, os.environ.get('FBP_TEST_FLAGS', '').split())
    else: _run_plain(nb, monkeypatch)
    print(f'{nb.name}: {time.time() - t:.1f}s')

def test_nbdev_test():
    "nbdev's own runner still works (it skips the `#| slow` and `#| cuda` cells)."
    _nbdev_test(ROOT / 'nbs' / '00_ssm.ipynb')
