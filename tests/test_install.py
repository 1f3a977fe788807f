"""Packaging: the package installs, imports without optional extras, and stays in sync with settings.ini and README."""
import configparser, importlib, os, pathlib, re, shutil, subprocess, sys, sysconfig, tarfile, zipfile
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
    results = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'fbp_nb' / 'results').rglob('*.json'))
    assert not set(results) - set(names), f'result records missing from the wheel: {sorted(set(results) - set(names))}'
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
    status = next(l for l in meta.splitlines() if l.startswith('Classifier: Development Status'))
    names_of = {'1': 'Planning', '2': 'Pre-Alpha', '3': 'Alpha', '4': 'Beta', '5': 'Production/Stable'}
    assert status.endswith(f": {S['status']} - {names_of[S['status']]}"), status   # settings' status (3: Alpha), not the next one
    assert f"Requires-Python: >={S['min_python']}" in meta
    pys = [l.rsplit(':: ', 1)[1] for l in meta.splitlines() if l.startswith('Classifier: Programming Language :: Python ::')]
    assert pys[0] == S['min_python'], pys
    assert 'Provides-Extra: bench' in meta

def test_result_records_ship_at_any_depth(tmp_path):
    "JSON records under fbp_nb/results/ (sub-folders too) go into the sdist and the wheel built from it (`pip install .`)."
    src = tmp_path / 'src'
    src.mkdir()
    for f in ('settings.ini', 'setup.py', 'MANIFEST.in', 'README.md', 'LICENSE', 'CITATION.cff'): shutil.copy(ROOT / f, src / f)
    shutil.copytree(ROOT / 'fbp_nb', src / 'fbp_nb', ignore=shutil.ignore_patterns('__pycache__', 'results'))
    for rel in ('results/top.json', 'results/sub/mid.json', 'results/sub/deeper/low.json'):
        (src / 'fbp_nb' / rel).parent.mkdir(parents=True, exist_ok=True); (src / 'fbp_nb' / rel).write_text('{}')
    sdist = _build_sdist_from(src, tmp_path / 'dist')
    inner = {n.split('/', 1)[1] for n in tarfile.open(sdist).getnames() if '/' in n}
    r = _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q', '-w', tmp_path / 'whl', sdist])
    if r.returncode and 'No module named' in r.stderr: pytest.skip(f'no offline build backend: {r.stderr[-300:]}')
    assert r.returncode == 0, r.stderr[-2000:]
    names = set(zipfile.ZipFile(next((tmp_path / 'whl').glob('*.whl'))).namelist())
    for rel in ('results/top.json', 'results/sub/mid.json', 'results/sub/deeper/low.json'):
        assert f'fbp_nb/{rel}' in inner, f'{rel} missing from the sdist (MANIFEST.in)'
        assert f'fbp_nb/{rel}' in names, f'{rel} missing from the wheel (package_data)'


# --- issue 13: the package installs from its sdist, as a library user expects --------------------------------------
# One sdist -> wheel -> fresh venv build per session (fixture below); ~15 s on a 2-core machine.

OPTIONAL = ('matplotlib', 'seaborn', 'ipywidgets', 'pytorch_grad_cam', 'einops', 'scipy', 'torchmetrics',
            'pycocotools', 'cv2', 'openpyxl', 'yaml')   # never needed by `import fbp_nb.<module>`

def _modules():
    from fbp_nb._modidx import d
    return sorted(d['syms'])

def _run(args, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    return r

def _build_sdist(out): return _build_sdist_from(ROOT, out)

def _build_sdist_from(root, out):
    "`python -m build --sdist --no-isolation` (offline), else the legacy `setup.py sdist`."
    r = _run([sys.executable, '-m', 'build', '--sdist', '--no-isolation', '--outdir', out, root])
    if r.returncode and 'No module named build' in r.stderr:
        r = _run([sys.executable, 'setup.py', '-q', 'sdist', '-d', out], cwd=root)
    if r.returncode and 'No module named' in r.stderr: pytest.skip(f'no offline build backend: {r.stderr[-300:]}')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return next(pathlib.Path(out).glob('fbp_nb-*.tar.gz'))

@pytest.fixture(scope='module')
def sdist_install(tmp_path_factory):
    "Build the sdist, build a wheel *from the sdist* (what `pip wheel dist/fbp_nb-*.tar.gz` does), install it into a fresh venv."
    tmp = tmp_path_factory.mktemp('sdist')
    sdist = _build_sdist(tmp / 'dist')
    r = _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q', '-w', tmp / 'wheel', sdist])
    if r.returncode and 'No module named' in r.stderr: pytest.skip(f'no offline build backend: {r.stderr[-300:]}')
    assert r.returncode == 0, f'the sdist does not build: {r.stderr[-2000:]}'
    whl = next((tmp / 'wheel').glob('fbp_nb-*.whl'))
    venv = tmp / 'venv'
    _run([sys.executable, '-m', 'venv', '--without-pip', venv]).check_returncode()
    py = venv / ('Scripts/python.exe' if os.name == 'nt' else 'bin/python')
    # pip runs under the fresh interpreter (--python), which does not see this environment yet: nothing here is touched
    r = _run([sys.executable, '-m', 'pip', '--python', py, 'install', '--no-deps', '--no-index', '-q', whl])
    assert r.returncode == 0, r.stderr[-2000:]
    # then give the fresh venv this environment's dependencies (torch, ...) without installing them again; a .pth line
    # only appends the folder to sys.path (its own .pth files, like the editable install's finder, are not run)
    site = pathlib.Path(_run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).stdout.strip())
    (site / '_fbp_nb_host_env.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    return dict(sdist=sdist, wheel=whl, venv=venv, py=py, site=site, tmp=tmp)

def test_sdist_contents(sdist_install):
    "The sdist carries what setup.py reads (settings.ini, README.md) plus LICENSE and CITATION.cff; no notebooks."
    names = tarfile.open(sdist_install['sdist']).getnames()
    top = names[0].split('/')[0]
    for f in ('settings.ini', 'README.md', 'LICENSE', 'CITATION.cff', 'setup.py', 'fbp_nb/__init__.py', 'fbp_nb/models/__init__.py'):
        assert f'{top}/{f}' in names, f'{f} missing from the sdist'
    assert not [n for n in names if n.endswith('.ipynb') or '__pycache__' in n]

def test_sdist_installs_and_imports_in_fresh_venv(sdist_install):
    "Every module imports from the copy installed from the sdist (not the checkout), and the console scripts exist."
    code = ("import importlib, pathlib, fbp_nb\n"
            f"mods = {_modules()!r}\n"
            "for m in mods: importlib.import_module(m)\n"
            "print(fbp_nb.__version__); print(pathlib.Path(fbp_nb.__file__).resolve())")
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    r = _run([sdist_install['py'], '-c', code], cwd=sdist_install['tmp'], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    version, path = r.stdout.split()[-2:]
    assert version == S['version']
    assert pathlib.Path(path).is_relative_to(sdist_install['site'].resolve()), f'imported {path}, not the sdist install'
    bindir = sdist_install['py'].parent
    for script in ('fbp', 'fbp_train', 'fbp_eval', 'fbp_predict'): assert (bindir / script).exists() or (bindir / f'{script}.exe').exists()

def _requires_dist(wheel):
    z = zipfile.ZipFile(wheel)
    meta = z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))).decode()
    return [l.split(':', 1)[1].strip() for l in meta.splitlines() if l.startswith('Requires-Dist:')]

def _name(req): return re.split(r'[\s<>=!~;\[(]', req, maxsplit=1)[0].lower().replace('_', '-')

def test_core_requirements_are_lean(sdist_install):
    "Core Requires-Dist (no `extra ==` marker) has no notebook-only packages; the extras carry them."
    reqs = _requires_dist(sdist_install['wheel'])
    core = {_name(r) for r in reqs if 'extra ==' not in r}
    assert {'torch', 'torchvision', 'numpy', 'pillow', 'fastcore'} <= core
    for heavy in ('grad-cam', 'ipywidgets', 'seaborn', 'einops', 'jupyterlab', 'nbdev', 'pytest', 'torchmetrics', 'scipy'):
        assert heavy not in core, f'{heavy} is a core requirement'
    extra = lambda e: {_name(r) for r in reqs if re.search(rf'extra\s*==\s*["\']{e}["\']', r)}
    assert 'grad-cam' in extra('interpret')
    assert {'seaborn', 'ipywidgets', 'matplotlib', 'scipy'} <= extra('course')
    assert extra('course') <= extra('dev') and {'nbdev', 'pytest'} <= extra('dev'), 'dev must stay a complete course + test env'
    assert extra('interpret') <= extra('dev'), 'dev runs chapter 13 (Grad-CAM): it needs the interpret extra'
    assert 'build' in extra('dev')

def test_import_without_optional_packages():
    "Every module imports with the course/interpret extras missing (imports of them stay inside functions)."
    code = (f"import sys\nfor n in {OPTIONAL!r}: sys.modules[n] = None\n"
            f"import importlib\nfor m in {_modules()!r}: importlib.import_module(m)\nprint('ok')")
    r = _run([sys.executable, '-c', code], cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-3000:]

def test_det_data_does_not_import_matplotlib():
    code = "import sys, fbp_nb.det_data, fbp_nb.data, fbp_nb.metrics\nprint('matplotlib' in sys.modules)"
    r = _run([sys.executable, '-c', code], cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == 'False', r.stdout + r.stderr[-2000:]

def test_license_file_matches_settings():
    text = (ROOT / 'LICENSE').read_text(encoding='utf-8')
    assert S['license'] == 'apache2'
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text and 'END OF TERMS AND CONDITIONS' in text
    assert 'Copyright 2026 fbp_nb contributors' in text
    cff = (ROOT / 'CITATION.cff').read_text(encoding='utf-8')
    assert 'cff-version: 1.2.0' in cff and 'license: Apache-2.0' in cff and 'references:' in cff
    user, repo = S['user'], S['repo']
    assert f'repository-code: "https://github.com/{user}/{repo}"' in cff
    for arxiv in ('2312.00752', '2107.08430', '2401.10166', '1610.02391', '2509.01431', '2510.16220', '2405.01828'):
        assert f'arXiv:{arxiv}' in cff, f'CITATION.cff: arXiv:{arxiv} missing'
    yaml = pytest.importorskip('yaml')
    refs = yaml.safe_load(cff)['references']
    assert all(r.get('title') and r.get('authors') and r.get('type') for r in refs)
    assert set((ROOT / 'MANIFEST.in').read_text().split()) >= {'settings.ini', 'README.md', 'LICENSE', 'CITATION.cff'}

def _floor(name):
    req = next(r for r in S['requirements'].split() if _name(r) == name)
    m = re.search(r'>=\s*([0-9.]+)', req)
    assert m, f'{name} needs a floor: {req}'
    return tuple(int(x) for x in m.group(1).split('.')[:2])

def test_torch_floors():
    "torch.amp.GradScaler('cuda') needs torch 2.3; torchvision 0.18 is its release (transforms.v2 ToImage/ToDtype: 0.16)."
    assert _floor('torch') >= (2, 3)
    assert _floor('torchvision') >= (0, 18)
    import torch, torchvision
    from torchvision.transforms import v2
    torch.amp.GradScaler('cuda', enabled=False); v2.ToImage(); v2.ToDtype(torch.float32, scale=True)

def test_nbdev_docs_config_and_workflows():
    "nbdev's standard docs configuration and the two GitHub workflows: valid YAML, commands that exist here, the README's test command."
    yaml = pytest.importorskip('yaml')
    q = yaml.safe_load((ROOT / 'nbs' / '_quarto.yml').read_text())
    assert q['project']['type'] == 'website' and 'nbdev.yml' in q['metadata-files']
    assert (ROOT / 'nbs' / q['format']['html']['css']).exists()
    ny = yaml.safe_load((ROOT / 'nbs' / 'nbdev.yml').read_text())
    assert ny['website']['repo-url'] == f"https://github.com/{S['user']}/{S['repo']}" and ny['project']['output-dir'] == S['doc_path']
    wf = ROOT / '.github' / 'workflows'
    test, deploy = (yaml.safe_load((wf / f).read_text()) for f in ('test.yaml', 'deploy.yaml'))
    runs = '\n'.join(s.get('run', '') for s in test['jobs']['test']['steps'])
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    sec = readme[readme.index('## Quickstart'):]
    block = sec[sec.index('```sh') + 5: sec.index('```', sec.index('```sh') + 5)].strip().splitlines()
    assert block[1].split('&& ')[-1] in runs.splitlines()[-1], 'the test workflow must end with the README\'s test command'
    ci = (ROOT / '.ci' / 'run').read_text()
    for cmd in ('pip install torch==', 'pip install -e ".[dev]"', 'nbdev_export', 'nbdev_clean', 'python .ci/render_readme.py --check'):
        assert cmd in runs and cmd in ci, cmd
    torch_pin = re.search(r'torch==\S+ torchvision==\S+', ci)[0]
    assert torch_pin in runs and torch_pin in block[0], 'one torch pin in .ci/run, the workflow and the README'
    for exe in ('nbdev_export', 'nbdev_clean', 'nbdev_docs'):
        assert shutil.which(exe, path=os.path.dirname(sys.executable)) or shutil.which(exe), f'{exe} not installed'
    steps = deploy['jobs']['deploy']['steps']
    assert any(s.get('uses', '').startswith('fastai/workflows/quarto-ghp') for s in steps)

def test_top_level_create_and_load_model(tmp_path):
    "`fbp_nb.create_model` and `fbp_nb.load_model` at the top level; `import fbp_nb` alone does not import torch."
    r = _run([sys.executable, '-c', "import sys, fbp_nb; assert 'torch' not in sys.modules, 'import fbp_nb imports torch'\n"
              "m = fbp_nb.create_model('mamba_cnn_D'); print(type(m).__name__, m.model_config['name'])"], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ['MambaCNN', 'mamba_cnn_D'], r.stderr[-2000:]
    import contextlib, io, torch, fbp_nb
    from fbp_nb.train import RunConfig, run
    with contextlib.redirect_stdout(io.StringIO()):
        res = run(RunConfig(epochs=1, n_train=32, n_val=8, n_test=8, img_size=32, model_kwargs={'width_mult': 0.25}, out=str(tmp_path / 'r')), progress=False)
    x = torch.randn(2, 3, 32, 32)
    for ck in (res.out, res.out / 'model.pt'):
        m = fbp_nb.load_model(ck)
        assert not m.training and m.run_info['model']['name'].startswith('mamba_cnn_D')   # compact on synth
        torch.testing.assert_close(m(x), res.learn.model.eval().cpu()(x))

def test_readme_python_floor_and_links():
    "The README's Python floor is settings' min_python; index.ipynb's links work from nbs/ and README.md's from the root."
    text = (ROOT / 'README.md').read_text(encoding='utf-8')
    assert f"Python {S['min_python']} or newer" in text and 'Python 3.9+' not in text
    import json
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text(encoding='utf-8'))
    md = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    for base, doc in ((ROOT / 'nbs', md), (ROOT, text)):
        for t in re.findall(r'\]\(([^)\s]+)\)', doc):
            if re.match(r'^([a-z][a-z0-9+.-]*:|#)', t): continue
            assert (base / t.split('#')[0]).exists(), f'broken link {t} (relative to {base.name})'
    assert not re.search(r'\d{3}_[0-9a-f]{16}\.txt', md + text), 'cite papers by title and arXiv id, not by file name'
