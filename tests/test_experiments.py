"""The registered experiments (chapter 14): every preset builds its configs, every distinct model/loss/optimiser of a preset
trains one epoch at a tiny size, the committed records load and render, and the README's tables equal what the records give."""
import json
from pathlib import Path
import pytest
import fbp_nb.experiments as X
from fbp_nb.models import find_weights
from fbp_nb.train import RunConfig, config_for, run

REPO = Path(__file__).resolve().parents[1]


def test_every_preset_builds_its_configs():
    for e in X.EXPERIMENTS.values():
        for s in e.scales:
            todo = X.plan(e.name, s)
            assert todo, (e.name, s)
            for r, k in todo:
                if e.rows[r].kind == 'run':
                    c = X.row_config(e, r, s, k, portable=True)
                    assert '{' not in (c.root or '') and '{' not in (c.weights or ''), (e.name, s, r)


def _tiny(cfg: RunConfig, out) -> RunConfig:
    "The same model, loss, optimiser and schedule on the embedded synthetic data, a few images, one epoch."
    det = cfg.task.name == 'detection'
    weights = cfg.weights if cfg.weights and Path(cfg.weights).is_file() else None
    d = dict(data='synth_fer' if det else 'synth', root=None, weights=weights, n_train=8, n_val=4, n_test=4, batch_size=4,
             img_size=64 if det else (96 if cfg.img_size > 128 else cfg.img_size), epochs=1, out=str(out), cache=None, protocol='60-40',
             align='none', device='cpu')
    if not det and cfg.model.startswith('mamba_cnn'): d['arch'] = 'full'   # the preset's real network, not the synth default (compact)
    return cfg.replace(**d)


def _distinct_runs():
    "One row per distinct network, optimiser and schedule of every `paper` preset (the presets the CPU tables do not exercise)."
    seen = {}
    for e in X.EXPERIMENTS.values():
        if 'paper' not in e.scales: continue
        for r, row in e.rows.items():
            if row.kind != 'run': continue
            c = X.row_config(e, r, 'paper', 0, portable=True)
            det = c.task.name == 'detection'               # a detector's switches change its structure; a regressor's kwargs do not here
            key = (c.model, json.dumps(c.model_kwargs, sort_keys=True) if det else '', c.optimizer, c.lr_schedule, c.weights is not None)
            seen.setdefault(key, (e.name, 'paper', r))
    return sorted(seen.values())


@pytest.mark.parametrize('name,scale,row', _distinct_runs())
def test_preset_row_trains_one_step(name, scale, row, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    e = X.get_experiment(name)
    cfg = X.row_config(e, row, scale, 0, portable=True)
    if cfg.weights and find_weights() is not None: cfg = cfg.replace(weights=str(find_weights()))
    r = run(_tiny(cfg, tmp_path/'run'), progress=False)
    assert (r.out/'model.pt').exists() and len(r.history) == 1


def test_committed_records_render():
    base = X.packaged_results()
    names = sorted({p.relative_to(base).parts[:2] for p in base.rglob('seed*.json')})
    assert ('fer_yolo_mamba_table3', 'cpu') in names and ('vm_beautynet_table', 'cpu') in names
    for name, var in names:
        t = X.markdown_table(name, var)
        assert t.startswith('| ') and 'no records' not in t, (name, var)
        s = X.summary(name, var)
        for row, x in s.iterrows():                      # mean over the records, recomputed by hand
            recs = [json.loads(p.read_text()) for p in (base/name/var/row).glob('seed*.json')]
            m = X.get_experiment(name).metrics[0]
            vals = [r['metrics'][m] for r in recs if m in r['metrics']]
            assert abs(x[m] - sum(vals) / len(vals)) < 1e-12 and x['n'] == len(recs)


@pytest.mark.parametrize('path', ['README.md', 'nbs/index.ipynb'])
def test_readme_tables_are_the_records(path):
    "Every `<!-- repro: ... -->` table of the README (and of index.ipynb, which renders it) is what its records give."
    text = (REPO/path).read_text(encoding='utf-8')
    if path.endswith('.ipynb'):
        text = '\n\n'.join(''.join(c['source']) for c in json.loads(text)['cells'] if c['cell_type'] == 'markdown')
    assert X.MARKER.search(text), f"{path}: no <!-- repro: ... --> table"
    filled = X.fill_tables(text)
    if filled != text:
        bad = [m[2] for m, n in zip(X.MARKER.finditer(text), X.MARKER.finditer(filled)) if m[0] != n[0]]
        pytest.fail(f"{path}: the tables of {bad} differ from their records: run fill_tables (chapter 14) on index.ipynb, then .ci/render_readme.py")


def test_fbp_repro_cli(tmp_path, monkeypatch):
    "`fbp repro list/run/table`: a row runs with overrides under its own variant, is done on the second call, and prints its table."
    from fbp_nb.cli import main
    tiny = X.Experiment('tiny_cli', 'a CLI check', 'tests', {'D': X.Row('Mamba-CNN D, tiny', dict(model_kwargs={'width_mult': 0.25}))},
                        {'cpu': X.Scale(dict(data='synth', n_train=64, n_val=16, n_test=32, img_size=32, epochs=2, batch_size=16), seeds=(0, 1))})
    monkeypatch.setitem(X.EXPERIMENTS, 'tiny_cli', tiny)
    assert main(['repro', 'list']) == 0
    args = ['repro', 'run', 'tiny_cli', '--seeds', '1', '--epochs', '1', '--img-size', '40',
            '--results', str(tmp_path/'res'), '--runs', str(tmp_path/'runs'), '--no-progress', '--device', 'cpu']
    assert main(args) == 0
    var = 'cpu+epochs=1+img_size=40'                                     # --device changes no number: not in the variant
    rec = json.loads((tmp_path/'res'/'tiny_cli'/var/'D'/'seed1.json').read_text())
    assert rec['config']['epochs'] == 1 and rec['config']['img_size'] == 40 and rec['config']['seed'] == 1
    assert rec['command'] == "fbp_train --n-train 64 --n-val 16 --n-test 32 --model-kwargs '{\"width_mult\": 0.25}' --img-size 40 --batch-size 16 --epochs 1 --seed 1"
    assert rec['repro'] == 'fbp repro run tiny_cli --scale cpu --rows D --seeds 1 --device cpu --epochs 1 --img-size 40'
    mtime = (tmp_path/'res'/'tiny_cli'/var/'D'/'seed1.json').stat().st_mtime_ns
    assert main(args) == 0                                               # done: nothing retrained, the record untouched
    assert (tmp_path/'res'/'tiny_cli'/var/'D'/'seed1.json').stat().st_mtime_ns == mtime
    assert main(['repro', 'table', 'tiny_cli', '--scale', var, '--results', str(tmp_path/'res')]) == 0
    assert X.markdown_table('tiny_cli', var, tmp_path/'res').count('\n| Mamba-CNN D, tiny | 1 †') == 1
    assert main(['repro', 'run', 'tiny_cli', '--rows', 'E']) == 2       # one sentence, before any work
    assert main(['repro', 'run', 'nope']) == 2
    assert main(['repro', 'run', 'tiny_cli', '--scale', 'gpu']) == 2
