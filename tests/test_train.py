"""The run API of `fbp_nb.train` from Python: `run(RunConfig(...))`, the JSON round trip of `RunConfig`, a relative data
root evaluated from another folder, safe checkpoint loading (weights_only=True), and no library module importing the CLI."""
import ast, contextlib, io, json, os, pathlib, re
import pytest
import torch
from fbp_nb.train import RunConfig, RunResult, run, read_run, stored_config, data_root
from fbp_nb.beauty import evaluate_regressor as evaluate

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(n_train=48, n_val=16, n_test=24, img_size=32, model_kwargs={'width_mult': 0.25}, device='cpu')

@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    "One tiny training run (1 epoch on synthetic faces), shared by the tests below."
    out = tmp_path_factory.mktemp('train') / 'run'
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): res = run(RunConfig(epochs=1, out=str(out), **TINY), progress=False)
    return res, buf.getvalue()

def test_run_from_python(tiny_run):
    res, printed = tiny_run
    assert isinstance(res, RunResult) and res.test['n'] == 24 and set(res.test) >= {'PC', 'MAE', 'RMSE'}
    for f in ('model.pt', 'last.pt', 'config.json', 'metrics.json', 'test_predictions.csv', 'history.json', 'history.csv', 'learning_curves.png'):
        assert (res.out / f).is_file(), f
    last = printed.strip().splitlines()[-1]                          # the same final line as fbp_train
    assert last == f"PC={res.test['PC']:.3f} MAE={res.test['MAE']:.3f} RMSE={res.test['RMSE']:.3f}"
    assert json.loads((res.out / 'metrics.json').read_text())['test'] == res.test
    assert res.config.arch == 'compact' and res.best_val['epoch'] == 0 and len(res.history) == 1

def test_regression_run_with_adam_and_step_decay(tmp_path):
    "The paper's recipe options work for a regressor too: Adam, lr x lr_decay every lr_decay_every epochs, no plateau."
    with contextlib.redirect_stdout(io.StringIO()):
        res = run(RunConfig(epochs=3, out=str(tmp_path / 'a'), optimizer='adam', lr=1e-3, lr_schedule='exp', lr_decay=0.5, lr_decay_every=2, **TINY),
                  progress=False)
    assert [r['lr'] for r in res.history] == pytest.approx([1e-3, 1e-3, 5e-4])
    assert type(res.learn.opt) is torch.optim.Adam and res.learn.sched is None

def test_config_json_round_trip(tmp_path):
    c = RunConfig(data='scut', root='data/scut', protocol='3', model='mobilenet_v2', model_kwargs={'width_mult': 0.5},
                  loss='tukey', loss_param=[2.0, 1.0], lr=3e-4, fresh_lr_mult=10.0, cache='memory', epochs=3, out='runs/x')
    assert RunConfig.from_json(c.to_json()) == c
    c.to_json(tmp_path / 'c.json')
    assert RunConfig.from_json(tmp_path / 'c.json') == c and RunConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['learning_rate'\]"): RunConfig.from_dict({**c.to_dict(), 'learning_rate': 1})
    for key, bad, msg in (('epochs', 0, 'epochs: must be >= 1'), ('lr', '1e-3', 'lr: expected float'), ('augment', 'yes', "augment: 'yes' is not one of"),
                          ('model', 'vgg16', "model: unknown model 'vgg16'"), ('loss_param', [1, 2, 3], 'loss_param:'),
                          ('protocol', 6, 'protocol: expected str'), ('cache', 'disk', "cache: 'disk'")):
        with pytest.raises(ValueError, match=re.escape(msg)): RunConfig.from_dict({**c.to_dict(), key: bad})

def test_checkpoints_load_weights_only(tiny_run):
    res, _ = tiny_run
    for f in ('model.pt', 'last.pt'):                                # RNG states and configs are tensors and plain values
        ck = torch.load(res.out / f, map_location='cpu', weights_only=True)
        assert stored_config(ck['config']) == res.config

class Payload:
    "Unpickling this object would create the marker file (it stands for any code a pickle can run)."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (io.open, (self.marker, 'w'))

def test_pickled_payload_is_refused(tiny_run, tmp_path):
    res, _ = tiny_run
    marker = tmp_path / 'PAYLOAD_RAN'
    ck = torch.load(res.out / 'model.pt', weights_only=True)
    ck['config']['note'] = Payload(marker)
    evil = tmp_path / 'model.pt'
    torch.save(ck, evil)
    with pytest.raises(ValueError, match=re.escape(f"{evil}: refused")): read_run(evil)
    with pytest.raises(ValueError, match='refused'): evaluate(evil, device='cpu')
    from fbp_nb.learner import load_checkpoint
    with pytest.raises(ValueError, match='refused'): load_checkpoint(evil)
    assert not marker.exists(), 'the pickled payload ran'
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='junk.pt: not a fbp_train checkpoint'): read_run(tmp_path / 'junk.pt')

def test_relative_root_from_another_folder(tmp_path, monkeypatch):
    "A run trained with root='scut' (relative) is evaluated from another working folder."
    from fbp_nb.data import fake_scut_fbp5500
    proj = tmp_path / 'proj'
    fake_scut_fbp5500(proj / 'scut', n_per_group=10)
    monkeypatch.chdir(proj)
    with contextlib.redirect_stdout(io.StringIO()):
        res = run(RunConfig(data='scut', root='scut', val_frac=0.2, img_size=32, model='mamba_cnn_A', arch='compact',
                            model_kwargs={'width_mult': 0.25}, epochs=1, batch_size=8, device='cpu', out='runs/rel'), progress=False)
    ck = read_run(proj / 'runs' / 'rel' / 'model.pt')
    assert (ck['config']['run']['root'], ck['config']['root_rel']) == ('scut', os.path.join('..', '..', 'scut'))
    assert ck['config']['root_abs'] == str((proj / 'scut').resolve())
    (tmp_path / 'elsewhere').mkdir(); monkeypatch.chdir(tmp_path / 'elsewhere')
    m, _ = evaluate(proj / 'runs' / 'rel' / 'model.pt', device='cpu')
    assert m == res.test
    # the data and the runs moved together to another place: found through the run folder, not the stale absolute path
    moved = tmp_path / 'moved'
    (proj).rename(moved)
    assert pathlib.Path(data_root(read_run(moved / 'runs' / 'rel')['config'], moved / 'runs' / 'rel')).resolve() == (moved / 'scut').resolve()
    assert evaluate(moved / 'runs' / 'rel' / 'model.pt', device='cpu')[0] == res.test
    import shutil; shutil.rmtree(moved / 'scut')
    with pytest.raises(FileNotFoundError, match='data root of the run not found'): evaluate(moved / 'runs' / 'rel' / 'model.pt', device='cpu')

def _imports_cli(tree: ast.AST, pkg: str) -> list:
    "Line numbers of imports of fbp_nb.cli in a parsed module of package `pkg` (absolute or relative)."
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            hits += [node.lineno for a in node.names if a.name == 'fbp_nb.cli' or a.name.startswith('fbp_nb.cli.')]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:                                           # relative: resolve against the module's package
                parts = pkg.split('.')[:len(pkg.split('.')) - node.level + 1]
                base = '.'.join(parts + ([base] if base else []))
            if base == 'fbp_nb.cli' or base.startswith('fbp_nb.cli.') or (base == 'fbp_nb' and any(a.name == 'cli' for a in node.names)):
                hits.append(node.lineno)
    return hits

def test_no_module_imports_the_cli():
    lib = ROOT / 'fbp_nb'
    files = sorted(lib.rglob('*.py'))
    assert len(files) > 5
    bad = {}
    for f in files:
        if f.name == 'cli.py' and f.parent == lib: continue
        pkg = '.'.join(('fbp_nb',) + f.relative_to(lib).parent.parts)
        hits = _imports_cli(ast.parse(f.read_text(), str(f)), pkg)
        if hits: bad[str(f.relative_to(ROOT))] = hits
    assert not bad, f'library modules import the command line (fbp_nb.cli): {bad}'
    # the checker itself catches every spelling
    for src, pkg in (('import fbp_nb.cli', 'fbp_nb'), ('from fbp_nb.cli import train', 'fbp_nb'), ('from .cli import x', 'fbp_nb'),
                     ('from . import cli', 'fbp_nb'), ('from fbp_nb import cli', 'fbp_nb'), ('from ..cli import y', 'fbp_nb.models')):
        assert _imports_cli(ast.parse(src), pkg), src
    assert not _imports_cli(ast.parse('from .train import run\nfrom . import register_model'), 'fbp_nb.models')
