"""Every notebook is a test: each runs in its own process through `nbdev_test`, exactly as nbdev runs it (cells flagged
`#| slow` or `#| cuda` are skipped unless named in the FBP_TEST_FLAGS environment variable, e.g. FBP_TEST_FLAGS="slow")."""
import os, pathlib, shutil, subprocess, sys, time
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))

def test_found_notebooks():
    names = [p.stem for p in NBS]
    for required in ('index', '00_ssm', '01_scan', '02_mamba'): assert required in names, f'missing nbs/{required}.ipynb'

@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    exe = shutil.which('nbdev_test', path=os.path.dirname(sys.executable)) or shutil.which('nbdev_test')
    assert exe, 'nbdev_test not found: pip install -e ".[dev]"'
    cmd = [exe, '--path', str(nb), '--n_workers', '0', '--do_print']
    flags = os.environ.get('FBP_TEST_FLAGS', '').split()
    if flags: cmd += ['--flags', ' '.join(flags)]
    t = time.time()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    out = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0 and 'Some notebooks failed' not in out, f'{nb.name} failed:\n{out}'
    print(f'{nb.name}: {time.time() - t:.1f}s')
