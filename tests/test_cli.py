"""The `fbp` console command, run as a user runs it: a separate process through the installed entry point."""
import os, re, shutil, subprocess, sys
import pytest

def fbp(*args, timeout=600):
    exe = shutil.which('fbp', path=os.path.dirname(sys.executable)) or shutil.which('fbp')
    assert exe, 'the `fbp` console script is not installed: pip install -e ".[dev]"'
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)

def test_help():
    r = fbp('--help')
    assert r.returncode == 0, r.stderr
    for word in ('info', 'demo'): assert word in r.stdout
    r = fbp('demo', '--help')
    assert r.returncode == 0 and '--steps' in r.stdout and '--device' in r.stdout

def test_version_and_info():
    import fbp_nb
    r = fbp('--version')
    assert r.returncode == 0 and fbp_nb.__version__ in r.stdout
    r = fbp('info')
    assert r.returncode == 0, r.stderr
    assert re.search(r'^torch\s+\S+', r.stdout, flags=re.M) and 'mamba_ssm_kernel' in r.stdout

def test_demo_short_run():
    r = fbp('demo', '--steps', '40', '--no-progress', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r'selective_acc=(\d\.\d{3}) lti_acc=(\d\.\d{3})', last)
    assert m, last
    assert all(0 <= float(v) <= 1 for v in m.groups())

def test_bad_options():
    r = fbp('demo', '--bogus')
    assert r.returncode == 2 and 'unrecognized arguments: --bogus' in r.stderr
    r = fbp('demo', '--steps', '0')
    assert r.returncode == 2 and '--steps must be >= 1' in r.stderr
    r = fbp('demo', '--steps', 'ten')
    assert r.returncode == 2 and 'invalid int value' in r.stderr

def test_cuda_request_without_gpu():
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    r = fbp('demo', '--steps', '1', '--device', 'cuda')
    assert r.returncode == 2 and 'no usable CUDA GPU' in r.stderr

# --- fbp_train / fbp_eval / fbp_predict -------------------------------------------------------------------------------

def script(name, *args, timeout=300):
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    assert exe, f'the `{name}` console script is not installed: pip install -e ".[dev]"'
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)

LAST = re.compile(r'PC=(-?\d\.\d{3}|nan) MAE=(\d+\.\d{3}) RMSE=(\d+\.\d{3})')
# plateau: extending a run (1 epoch, then --resume to 2) equals a straight 2-epoch run; a cosine schedule depends on the total
TINY = ('--lr-schedule', 'plateau', '--n-train', '48', '--n-val', '16', '--n-test', '24', '--img-size', '32', '--width-mult', '0.25',
        '--device', 'cpu', '--no-progress')

@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    "One tiny real training run (2 epochs), shared by the tests below."
    out = tmp_path_factory.mktemp('fbp') / 'run'
    r = script('fbp_train', *TINY, '--epochs', '2', '--out', str(out))
    assert r.returncode == 0, r.stderr
    return out, r.stdout

def test_train_help():
    r = script('fbp_train', '--help')
    assert r.returncode == 0, r.stderr
    for opt in ('--data', '--root', '--protocol', '--val-frac', '--model', '--img-size', '--epochs', '--batch-size', '--lr',
                '--device', '--seed', '--resume', '--weights', '--cache', '--workers', '--no-progress', '--out', 'mamba_cnn_D',
                '--align', '--on-missing'):
        assert opt in r.stdout, opt
    for name in ('fbp_eval', 'fbp_predict'):
        r = script(name, '--help')
        assert r.returncode == 0 and 'CKPT' in r.stdout, r.stderr
    r = fbp('train', '--help')                      # the same command as a sub-command of `fbp`
    assert r.returncode == 0 and '--resume' in r.stdout

def test_train_tiny_run(run_dir):
    out, stdout = run_dir
    for f in ('model.pt', 'last.pt', 'metrics.json', 'history.json', 'learning_curves.png'): assert (out / f).is_file(), f
    last = stdout.strip().splitlines()[-1]
    assert LAST.fullmatch(last), last
    import json
    m = json.loads((out / 'metrics.json').read_text())
    assert m['test']['n'] == 24 and m['epochs_run'] == 2
    assert last == f"PC={m['test']['PC']:.3f} MAE={m['test']['MAE']:.3f} RMSE={m['test']['RMSE']:.3f}"
    assert (out / 'learning_curves.png').read_bytes()[:4] == b'\x89PNG'

def test_resume(run_dir, tmp_path):
    "Stop after 1 epoch, resume to 2: the same test metrics as the straight 2-epoch run."
    out, stdout = run_dir
    r = script('fbp_train', *TINY, '--epochs', '1', '--out', str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = script('fbp_train', '--resume', str(tmp_path / 'last.pt'), '--epochs', '2', '--no-progress')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == stdout.strip().splitlines()[-1]

def test_eval(run_dir):
    out, stdout = run_dir
    r = script('fbp_eval', str(out / 'model.pt'), '--split', 'test', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == stdout.strip().splitlines()[-1]   # same test metrics as at the end of training
    assert 'per group' in r.stdout

def test_eval_wrong_architecture_or_file(run_dir):
    out, _ = run_dir
    r = script('fbp_eval', str(out / 'model.pt'), '--model', 'mobilenet_v2')
    assert r.returncode == 2 and 'model.pt: checkpoint of mamba_cnn_D, not --model mobilenet_v2' in r.stderr, r.stderr
    r = script('fbp_eval', str(out / 'metrics.json'))
    assert r.returncode == 2 and 'metrics.json: not a fbp_train checkpoint' in r.stderr, r.stderr

def test_predict(run_dir, tmp_path):
    from fbp_nb.synth import SynthFaces
    out, _ = run_dir
    SynthFaces(1, img_size=32, split='test').render(0).save(tmp_path / 'face.png')
    r = script('fbp_predict', str(out / 'model.pt'), str(tmp_path / 'face.png'), '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    path, score = r.stdout.strip().splitlines()[-1].split('\t')[:2]
    assert path == str(tmp_path / 'face.png') and 1 <= float(score) <= 5
    (tmp_path / 'bad.jpg').write_bytes(b'not an image')
    r = script('fbp_predict', str(out / 'model.pt'), str(tmp_path / 'bad.jpg'), '--no-align')
    assert r.returncode == 2 and 'bad.jpg' in r.stderr, r.stderr
    r = script('fbp_predict', str(out / 'model.pt'), str(tmp_path / 'missing.jpg'), '--no-align')
    assert r.returncode == 2 and 'missing.jpg not found' in r.stderr, r.stderr

def test_train_bad_options(tmp_path):
    r = script('fbp_train', '--bogus')
    assert r.returncode == 2 and 'unrecognized arguments: --bogus' in r.stderr
    r = script('fbp_train', '--model', 'vgg16')
    assert r.returncode == 2 and "invalid choice: 'vgg16'" in r.stderr
    r = script('fbp_train', '--data', 'scut')
    assert r.returncode == 2 and '--root: required for --data scut' in r.stderr, r.stderr
    r = script('fbp_train', '--data', 'scut', '--root', str(tmp_path / 'nowhere'))
    assert r.returncode == 2 and 'nowhere: folder not found' in r.stderr, r.stderr

def test_train_cuda_request_without_gpu():
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    r = script('fbp_train', '--device', 'cuda')
    assert r.returncode == 2 and 'no usable CUDA GPU' in r.stderr, r.stderr

SCUT = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'SCUT-FBP5500')

@pytest.mark.skipif(not os.path.isdir(os.path.join(SCUT, 'Images')), reason='real SCUT-FBP5500 not found at ../shared/data')
def test_train_real_scut_one_epoch(tmp_path):
    "The real pipeline end to end on all 5500 faces: one epoch of a tiny Mamba-CNN D with a dynamic Huber loss."
    import csv, json
    r = script('fbp_train', '--data', 'scut', '--root', SCUT, '--img-size', '32', '--width-mult', '0.25', '--epochs', '1',
               '--loss', 'huber', '--device', 'cpu', '--no-progress', '--out', str(tmp_path), timeout=900)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / 'metrics.json').read_text())
    assert (m['test']['n'], m['config']['loss']['monitor']) == (2200, 'val_RMSE')      # the official 40% test split
    assert r.stdout.strip().splitlines()[-1] == f"PC={m['test']['PC']:.3f} MAE={m['test']['MAE']:.3f} RMSE={m['test']['RMSE']:.3f}"
    with open(tmp_path / 'test_predictions.csv') as f: rows = list(csv.DictReader(f))
    assert len(rows) == 2200 and len({row['name'] for row in rows}) == 2200
    assert all(1 <= float(row['target']) <= 5 for row in rows)

# --- options that map to RunConfig fields, and runs evaluated from another folder ---------------------------------------

def test_train_model_names_from_registry(tmp_path):
    r = script('fbp_train', *TINY, '--model', 'mamba_cnn_B', '--stem', 'paper', '--fresh-lr-mult', '2', '--epochs', '1', '--out', str(tmp_path / 'b'))
    assert r.returncode == 0, r.stderr
    import json
    cfg = json.loads((tmp_path / 'b' / 'config.json').read_text())
    assert (cfg['model'], cfg['model_kwargs'], cfg['fresh_lr_mult'], cfg['arch']) == ('mamba_cnn_B', {'width_mult': 0.25, 'stem': 'paper'}, 2.0, 'compact')
    r = script('fbp_train', '--model', 'mobilenet_v2', '--stem', 'paper')
    assert r.returncode == 2 and 'fbp_train: error: --stem applies to Mamba-CNN, not mobilenet_v2' in r.stderr, r.stderr
    r = script('fbp_train', '--model', 'resnext50', '--width-mult', '0.5')
    assert r.returncode == 2 and '--width-mult applies to Mamba-CNN and MobileNetV2, not resnext50' in r.stderr, r.stderr
    r = script('fbp_train', '--img-size', '16')
    assert r.returncode == 2 and 'fbp_train: error: --img-size: must be >= 32' in r.stderr, r.stderr

def test_eval_relative_root_from_another_folder(tmp_path):
    "fbp_train --root scut (relative) in one folder; fbp_eval from another folder finds the data."
    from fbp_nb.data import fake_scut_fbp5500
    proj, other = tmp_path / 'proj', tmp_path / 'other'
    fake_scut_fbp5500(proj / 'scut', n_per_group=10); other.mkdir()
    exe = lambda name: shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    r = subprocess.run([exe('fbp_train'), '--data', 'scut', '--root', 'scut', '--val-frac', '0.2', '--img-size', '32', '--width-mult', '0.25',
                        '--arch', 'compact', '--model', 'mamba_cnn_A', '--epochs', '1', '--batch-size', '8', '--device', 'cpu', '--no-progress',
                        '--out', 'runs/rel'], cwd=proj, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    e = subprocess.run([exe('fbp_eval'), str(proj / 'runs' / 'rel' / 'model.pt'), '--device', 'cpu'], cwd=other, capture_output=True, text=True, timeout=300)
    assert e.returncode == 0, e.stderr
    assert e.stdout.strip().splitlines()[-1] == r.stdout.strip().splitlines()[-1]

def test_train_options_are_runconfig_fields():
    "fbp_train's options are generated from RunConfig's fields: one option per field, its default, choices and help line the field's."
    import dataclasses
    from fbp_nb.cli import train_parser, eval_parser, field_option, option_flag, DATA_FIELDS
    from fbp_nb.train import RunConfig, list_tasks, get_task
    p = train_parser()
    acts = p._option_string_actions
    for k, f in RunConfig.__dataclass_fields__.items():
        a = acts.get(option_flag(k))
        assert a is not None and a.dest == k, f'RunConfig.{k} has no option {option_flag(k)}'
        md, default = f.metadata, (None if f.default is dataclasses.MISSING else f.default)
        cli = lambda v: 'none' if v is None else v
        assert a.default == (cli(default) if md['choices'] is not None else default), (k, a.default, default)
        if md['choices'] is not None: assert tuple(a.choices) == tuple(cli(c) for c in md['choices']), (k, a.choices)
        first = md['help'].split(' (None')[0].split('; None')[0].replace('%', '%%')
        assert a.help.startswith(first), (k, a.help, md['help'])
        if md['task'] is not None: assert f'[{md["task"]} runs]' in a.help, k
        for t in list_tasks():                                            # a None default: the help names each task's value
            if default is None and k in get_task(t).defaults and md['task'] in (None, t): assert f'{t} ' in a.help, (k, t, a.help)
    cli_only = {a.dest for a in p._actions} - set(RunConfig.__dataclass_fields__) - {'help'}
    assert cli_only == {'stem', 'width_mult', 'overwrite', 'resume', 'no_progress'}, cli_only
    e = eval_parser()._option_string_actions                              # fbp_eval: the run's data options default to the checkpoint's
    for k in DATA_FIELDS:
        md = RunConfig.__dataclass_fields__[k].metadata
        assert e[option_flag(k)].default == (None if md['run_defining'] else field_option(k)['default']), k
