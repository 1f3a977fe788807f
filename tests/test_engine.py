"""The run engine (`fbp_nb.train`) and its tasks: one `run` for every task with the task's defaults, a third task added
without touching the engine (through `run` and `fbp_train`), checkpoints of the previous layout still loading, and the
package's import graph: acyclic, no module reaching for another module's private names, none importing the CLI."""
import ast, contextlib, io, json, pathlib
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from fbp_nb.train import (RunConfig, Task, Scored, register_task, run, config_for, load_run, evaluate_run, read_run, stored_config,
                          list_tasks, get_task)
from fbp_nb.learner import Learner
from fbp_nb.models import register_model, list_models

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIB = ROOT / 'fbp_nb'

# ---------------------------------------------------------------------------------------------------------------- the acceptance runs
@pytest.mark.parametrize('model, task, key', [('yolox_nano', 'detection', 'mAP50'), ('mamba_cnn_D', 'regression', 'PC')])
def test_one_run_for_both_tasks(model, task, key, tmp_path):
    "`run(RunConfig(model=..., epochs=1, n_train=32, n_val=8, n_test=8, img_size=64))`: each model trains with its task's defaults."
    with contextlib.redirect_stdout(io.StringIO()) as out:
        r = run(RunConfig(model=model, epochs=1, n_train=32, n_val=8, n_test=8, img_size=64, out=str(tmp_path / 'r')), progress=False)
    want = get_task(task).defaults
    assert r.task.name == task and key in r.test and r.config.data == want['data'] and r.config.batch_size == want['batch_size']
    assert r.config.cls_weight == want.get('cls_weight')                       # 8 for a detector, None (unused) for a regressor
    files = {p.name for p in r.out.iterdir()}
    assert {'model.pt', 'last.pt', 'config.json', 'metrics.json', 'test_predictions.csv', 'history.json', 'history.csv', 'learning_curves.png'} <= files
    ck = read_run(r.out)
    assert ck['config']['task'] == task and ck['arch']['cls'] and stored_config(ck['config']) == r.config
    assert out.getvalue().strip().splitlines()[-1] == r.task.line(r.test)
    scalars = {k: v for k, v in r.test.items() if isinstance(v, (int, float))}
    assert {k: json.loads((r.out / 'metrics.json').read_text())['test'][k] for k in scalars} == pytest.approx(scalars)

def test_cli_and_api_train_the_same_config(tmp_path):
    "fbp_train and run() complete a config the same way (`config_for`): the detection default run, and a regression one."
    from fbp_nb.cli import train_parser, config_from_args
    p = train_parser()
    assert config_from_args(p.parse_args(['--model', 'yolox_nano', '--data', 'synth_fer'])) == config_for(RunConfig(model='yolox_nano', data='synth_fer'))
    assert config_from_args(p.parse_args([])) == config_for(RunConfig())
    assert config_from_args(p.parse_args(['--img-size', '96', '--epochs', '2'])) == config_for(img_size=96, epochs=2)

# ---------------------------------------------------------------------------------------------------------------- a third task
class Bins(torch.utils.data.Dataset):
    "Random images whose class is the bin of their mean brightness: learnable by a linear model."
    def __init__(self, n, size, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 3, size, size, generator=g) * torch.rand(n, 1, 1, 1, generator=g)
        self.y = torch.bucketize(self.x.mean((1, 2, 3)), torch.tensor([0.15, 0.3]))
    def __len__(self): return len(self.y)
    def __getitem__(self, i): return self.x[i], self.y[i]

@register_model('toy_bins_net', task='toy_bins', input_size=32, overwrite=True)
def toy_bins_net(pretrained=None, width:int=4):
    return nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 3))

class ToyBinsTask(Task):
    name, datasets, synthetic, table_name = 'toy_bins', ('noise',), ('noise',), 'confusion'
    defaults = dict(data='noise', img_size=32, n_train=96, n_val=32, n_test=32, batch_size=16, epochs=2, wd=0.0)
    curve_metrics, log_keys = ('val_acc',), ('train_loss', 'val_acc')
    def resolve(self, c): return c.replace(lr=c.lr or 3e-2, lr_schedule='plateau' if c.lr_schedule == 'auto' else c.lr_schedule)
    def splits(self, c): return {s: Bins(getattr(c, f'n_{s}'), c.img_size, c.seed + k) for k, s in enumerate(('train', 'val', 'test'))}
    def learner(self, model, splits, c, device, callbacks, progress):
        acc = lambda y, p: dict(acc=float((p.argmax(1) == y).float().mean()))
        return Learner(model, splits['train'], splits['val'], loss_fn=nn.CrossEntropyLoss(), metrics_fn=acc, target_scaler=None,
                       monitor='val_acc', lr=c.lr, wd=c.wd, batch_size=c.batch_size, device=device, seed=c.seed, callbacks=callbacks, progress=progress)
    def score(self, learn, ds, c):
        p, y = learn.predict(ds).argmax(1).numpy(), ds.y.numpy()
        return Scored(dict(n=len(y), acc=float((p == y).mean())), pd.crosstab(y, p).reset_index(), pd.DataFrame(dict(target=y, pred=p)))
    def line(self, m): return f"acc={m['acc']:.3f}"

def test_a_third_task_needs_no_engine_change(tmp_path):
    register_task(ToyBinsTask())
    assert 'toy_bins' in list_tasks() and list_models(task='toy_bins') == ['toy_bins_net']
    with contextlib.redirect_stdout(io.StringIO()): r = run(RunConfig(model='toy_bins_net', out=str(tmp_path / 'api')), progress=False)
    assert r.config.n_train == 96 and r.config.lr == 3e-2 and r.learn.mode == 'max'     # the task's defaults; accuracy maximised
    assert r.best_val['val_acc'] == max(h['val_acc'] for h in r.history)
    pred = pd.read_csv(r.out / 'test_predictions.csv')
    assert r.test['acc'] == pytest.approx(float((pred.target == pred.pred).mean()))       # the metric against its own predictions file
    net, c, task = load_run(r.out)
    assert (c, task.name, type(net).__name__) == (r.config, 'toy_bins', 'Sequential')
    with pytest.raises(ValueError, match="loss: applies to regression runs"): RunConfig(model='toy_bins_net', loss='huber')
    with pytest.raises(ValueError, match="data: 'scut' is not a data set of the toy_bins model"): RunConfig(model='toy_bins_net', data='scut')
    from fbp_nb.cli import train_main                                      # the command line, unchanged
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert train_main(['--model', 'toy_bins_net', '--epochs', '1', '--n-train', '64', '--out', str(tmp_path / 'cli'), '--no-progress']) == 0
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith('acc=') and RunConfig.from_json(tmp_path / 'cli' / 'config.json').n_train == 64

# ---------------------------------------------------------------------------------------------------------------- older checkpoints
def test_checkpoints_of_the_previous_layout(tmp_path):
    "model.pt files written before the engine (no task entry, cls_weight 1 stored for a regressor; a detector without arch) still load."
    with contextlib.redirect_stdout(io.StringIO()):
        reg = run(RunConfig(epochs=1, n_train=32, n_val=8, n_test=16, img_size=32, model_kwargs={'width_mult': 0.25}, out=str(tmp_path / 'reg')), progress=False)
        det = run(RunConfig(model='yolox_nano', epochs=1, n_train=16, n_val=4, n_test=4, img_size=64, batch_size=8, out=str(tmp_path / 'det')), progress=False)
    old = torch.load(reg.out / 'model.pt', weights_only=True)
    del old['config']['task']; old['config']['run']['cls_weight'] = 1.0; old['config']['args']['cls_weight'] = 1.0
    torch.save(old, tmp_path / 'old_reg.pt')
    net, c, task = load_run(tmp_path / 'old_reg.pt')
    assert task.name == 'regression' and c == reg.config
    assert evaluate_run(tmp_path / 'old_reg.pt', device='cpu').metrics == reg.test
    old = torch.load(det.out / 'model.pt', weights_only=True)
    del old['arch'], old['target_scaler']
    torch.save(old, tmp_path / 'old_det.pt')
    assert evaluate_run(tmp_path / 'old_det.pt', device='cpu').metrics['mAP50'] == pytest.approx(det.test['mAP50'])
    last = torch.load(det.out / 'last.pt', weights_only=True)          # an old detection last.pt kept its EMA inside the model's state dict
    ema = last['callbacks'].pop('EMA_0')['ema']
    last['model'] = {**last['model'], 'ema.updates': ema['updates'],                  # DetectionTask(model, ema): model.*, ema.module.*
                     **{'ema.module.' + k[len('module.model.'):]: v for k, v in ema.items() if k.startswith('module.model.')}}
    torch.save(last, tmp_path / 'old_last.pt')
    assert load_run(tmp_path / 'old_last.pt')[2].name == 'detection'   # its EMA weights load for evaluation
    with pytest.raises(ValueError, match=r"old_last.pt: a last.pt written before the run engine .* cannot be resumed"):
        run(det.config.replace(epochs=2, out=str(tmp_path / 'det')), resume=tmp_path / 'old_last.pt', progress=False)

# ---------------------------------------------------------------------------------------------------------------- the import graph
def _module_name(f: pathlib.Path) -> str:
    parts = ('fbp_nb',) + f.relative_to(LIB).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)

def _imports(f: pathlib.Path, mod:str|None=None) -> list:
    "(imported fbp_nb module, imported name or None, line) for every import statement of file `f` (module `mod`), at any depth: lazy ones too."
    mod, out = mod or _module_name(f), []
    pkg = mod if f.name == '__init__.py' else mod.rsplit('.', 1)[0]
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.startswith('fbp_nb')]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level: base = '.'.join(pkg.split('.')[:len(pkg.split('.')) - node.level + 1] + ([base] if base else []))
            if not base.startswith('fbp_nb'): continue
            for a in node.names:
                sub = f'{base}.{a.name}'
                out.append((sub, None, node.lineno) if (LIB.parent / (sub.replace('.', '/') + '.py')).exists() else (base, a.name, node.lineno))
    return out

def _graph() -> dict:
    return {_module_name(f): _imports(f) for f in sorted(LIB.rglob('*.py')) if f.name != '_modidx.py'}

def _cycle(g:dict) -> list|None:
    "A cycle of the directed graph {node: set of nodes} as a path, or None."
    state, path = {}, []
    def visit(m):
        state[m] = 'open'; path.append(m)
        for t in sorted(g.get(m, ())):
            if state.get(t) == 'open': return path[path.index(t):] + [t]
            if t not in state and (c := visit(t)): return c
        state[m] = 'done'; path.pop()
    for m in sorted(g):
        if m not in state and (c := visit(m)): return c
    return None

def test_import_graph_is_acyclic():
    g = {m: {t for t, _, _ in imps if t != m} for m, imps in _graph().items()}
    for m in g:                                        # importing fbp_nb.models.x runs fbp_nb.models first
        g[m] |= {'.'.join(t.split('.')[:k]) for t in list(g[m]) for k in range(2, t.count('.') + 1)} - {m}
    assert len(g) > 15 and {'fbp_nb.beauty', 'fbp_nb.detect', 'fbp_nb.train'} <= set(g)
    c = _cycle(g)
    assert c is None, f"import cycle: {' -> '.join(c)}"
    assert not g['fbp_nb.train'] & {'fbp_nb.beauty', 'fbp_nb.detect'}, 'the engine imports a task module'

def _private(imps) -> list: return [(t, n, line) for t, n, line in imps if n is not None and n.startswith('_') and not n.startswith('__')]

def test_no_module_imports_another_modules_private_names():
    bad = {m: _private(imps) for m, imps in _graph().items() if _private(imps)}
    assert not bad, f"private names imported across modules: {bad}"
    bad = {f.name: _private(_imports(f, f'tests.{f.stem}')) for f in sorted((ROOT / 'tests').rglob('*.py')) if _private(_imports(f, f'tests.{f.stem}'))}
    assert not bad, f"tests import private names: {bad}"

def test_the_graph_checks_can_fail(tmp_path):
    "The checkers see lazy and relative imports and private names, and find a cycle."
    p = tmp_path / 'fake.py'
    p.write_text("def f():\n    from .train import _secret, run\n    import fbp_nb.cli\n")
    imps = _imports(p, 'fbp_nb.fake')
    assert sorted(imps, key=str) == sorted([('fbp_nb.train', '_secret', 2), ('fbp_nb.train', 'run', 2), ('fbp_nb.cli', None, 3)], key=str)
    assert _private(imps) == [('fbp_nb.train', '_secret', 2)]
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a'] and _cycle({'a': {'b'}, 'b': set()}) is None
