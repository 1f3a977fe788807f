"""Packaging: the package installs, imports without optional extras, and stays in sync with settings.ini and README."""
import configparser, importlib, pathlib, subprocess, sys, zipfile
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CFG = configparser.ConfigParser(delimiters=['=']); CFG.read(ROOT / 'settings.ini')
S = CFG['DEFAULT']

def test_version_matches_settings():
    import fbp_nb
    assert fbp_nb.__version__ == S['version']

def test_all_exported_modules_import():
    from fbp_nb._modidx import d
    assert {'fbp_nb.ssm', 'fbp_nb.scan', 'fbp_nb.mamba', 'fbp_nb.cli'} <= {m for m in d['syms']}
    for m in d['syms']: importlib.import_module(m)

def test_import_without_mamba_ssm():
    "Importing fbp_nb (and the scan) must not depend on the optional compiled kernel."
    code = ("import sys; sys.modules['mamba_ssm'] = None\n"
            "import fbp_nb.scan as s, fbp_nb.mamba\n"
            "assert not s.has_mamba_ssm(); print('ok')")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr

def test_requirements_are_loose():
    reqs = S['requirements'].split()
    torch_req = [r for r in reqs if r.startswith('torch') and not r.startswith('torchvision')]
    assert torch_req and '==' not in torch_req[0], 'keep torch unpinned (Colab ships its own)'
    assert 'slow' in S['tst_flags'].split() and 'cuda' in S['tst_flags'].split()
    assert S['lib_path'] == 'fbp_nb' and S['nbs_path'] == 'nbs'
    assert 'fbp=fbp_nb.cli:main' in S['console_scripts'].split()

def test_readme_rendered_from_index():
    import render_readme
    assert (ROOT / 'README.md').read_text(encoding='utf-8') == render_readme.render(), \
        'README.md is out of date: python .ci/render_readme.py'

def test_quickstart_commands_in_readme():
    text = (ROOT / 'README.md').read_text(encoding='utf-8')
    sec = text[text.index('## Quickstart'):]
    block = sec[sec.index('```sh') + 5: sec.index('```', sec.index('```sh') + 5)].strip().splitlines()
    assert len(block) == 2, block
    assert block[0].endswith('fbp_train') and 'pip install -e ".[dev]"' in block[0]
    assert block[1].endswith('python -m pytest tests')

def test_wheel_contents(tmp_path):
    "Build the wheel offline and check it ships every module and the console entry point."
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path), str(ROOT)],
                       capture_output=True, text=True)
    if r.returncode and 'No module named' in r.stderr: pytest.skip(f'no offline build backend: {r.stderr[-200:]}')
    assert r.returncode == 0, r.stderr[-2000:]
    whl = next(tmp_path.glob('fbp_nb-*.whl'))
    names = zipfile.ZipFile(whl).namelist()
    for mod in ('ssm', 'scan', 'mamba', 'cli', '_modidx'): assert f'fbp_nb/{mod}.py' in names
    ep = next(n for n in names if n.endswith('entry_points.txt'))
    assert 'fbp = fbp_nb.cli:main' in zipfile.ZipFile(whl).read(ep).decode()
