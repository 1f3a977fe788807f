"""Regression tests for the run-side faults of issue 12: a diverged run is an error and leaves no model.pt, checkpoints
with non-finite weights are refused, data problems surface before the first epoch, every expected failure of the CLI
is a one-line `prog: error: ...` with exit code 2, non-UTF-8 file names print safely, a model scored on a data set with
another score scale is mapped onto it, and `fbp_eval`/`fbp_predict` use the crop (`--align`) the model was trained with.
(The pickled-payload checkpoint is refused in tests/test_train.py.) Tiny synthetic or fake data, one epoch, 32 px."""
import contextlib, errno, io, json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from fbp_nb.data import fake_scut_fbp5500, fake_mebeauty, rescale_scores, SCUT_6040
from fbp_nb.learner import DivergenceError
from fbp_nb.metrics import regression_metrics
from fbp_nb.train import RunConfig, run, read_run, check_out
from fbp_nb.beauty import evaluate_regressor as evaluate, predict_photos, scorer, load_splits, score_split

TINY = ['--lr-schedule', 'plateau', '--n-train', '48', '--n-val', '16', '--n-test', '24', '--img-size', '32', '--width-mult', '0.25',
        '--device', 'cpu', '--no-progress', '--epochs', '1']
SCUT_KW = dict(data='scut', val_frac=0.2, img_size=32, model='mamba_cnn_A', arch='compact', model_kwargs={'width_mult': 0.25},
               epochs=1, batch_size=8, device='cpu')

def script(name, *args, timeout=300, **kw):
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    assert exe, f'the `{name}` console script is not installed: pip install -e ".[dev]"'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)

def quiet(fn, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()): return fn(*a, **k)

@pytest.fixture(scope='module')
def scut(tmp_path_factory):
    "A tiny fake SCUT-FBP5500 folder (40 images with landmark files) and two runs on it: --align landmarks and none."
    root = fake_scut_fbp5500(tmp_path_factory.mktemp('data') / 'scut', n_per_group=10)
    runs = tmp_path_factory.mktemp('runs')
    res = {a: quiet(run, RunConfig(root=str(root), align=a, out=str(runs / a), **SCUT_KW), progress=False) for a in ('landmarks', 'none')}
    return root, res

def _test_names(root):
    return (root / 'train_test_files' / SCUT_6040 / 'test.txt').read_text().split()[::2]

# --- divergence ---------------------------------------------------------------------------------------------------------

def test_divergence_is_an_error_and_leaves_no_model(tmp_path):
    out = tmp_path / 'run'
    r = script('fbp_train', *TINY, '--lr', '1e6', '--out', str(out))
    assert r.returncode != 0
    assert 'fbp_train: error: training diverged at epoch 0' in r.stderr and '--lr 1e+06' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr
    assert not (out / 'model.pt').exists()

def test_divergence_removes_a_stale_model_pt(tmp_path):
    "A model.pt left in --out by an earlier run must not survive a diverged run that replaces it (overwrite=True)."
    out = tmp_path / 'run'
    cfg = RunConfig(n_train=48, n_val=16, n_test=24, img_size=32, model_kwargs={'width_mult': 0.25}, device='cpu', epochs=1, out=str(out))
    quiet(run, cfg, progress=False)
    assert (out / 'model.pt').is_file()
    with pytest.raises(DivergenceError, match='No model.pt written'): quiet(run, cfg.replace(lr=1e6), progress=False, overwrite=True)
    assert not (out / 'model.pt').exists()

def test_collapsed_predictions_are_flagged(tmp_path):
    "Predictions with a std below 1e-3 of the target range are reported as collapsed."
    ds = load_splits('synth', img_size=32, sizes=(8, 4, 12), only=('test',))['test']
    class Const:
        def predict(self, ds): return torch.full((len(ds),), 3.0)
    info = {}
    m, _ = score_split(Const(), ds, info=info)
    assert info['collapsed'] and info['pred_std'] == 0.0
    class Spread:
        def predict(self, ds): return torch.linspace(1, 5, len(ds))
    info = {}
    score_split(Spread(), ds, info=info)
    assert not info['collapsed']

def test_nan_checkpoint_refused(scut, tmp_path):
    _, res = scut
    ck = torch.load(res['none'].out / 'model.pt', weights_only=True)
    k = next(k for k, v in ck['model'].items() if v.is_floating_point())
    ck['model'][k][...] = float('nan')
    bad = tmp_path / 'nan.pt'
    torch.save(ck, bad)
    with pytest.raises(ValueError, match=f'{bad}: refused: non-finite weights'): read_run(bad)
    with pytest.raises(ValueError, match='refused: non-finite weights'): evaluate(bad, device='cpu')
    huge = tmp_path / 'huge.pt'
    ck = torch.load(res['none'].out / 'model.pt', weights_only=True)
    ck['model'][k][...] = 1e25
    torch.save(ck, huge)
    with pytest.raises(ValueError, match='refused: exploding weights'): read_run(huge)
    from fbp_nb.synth import SynthFaces
    SynthFaces(1, img_size=32, split='test').render(0).save(tmp_path / 'face.png')
    r = script('fbp_predict', str(bad), str(tmp_path / 'face.png'), '--device', 'cpu')
    assert r.returncode == 2 and f'fbp_predict: error: {bad}: refused: non-finite weights' in r.stderr, r.stderr
    assert r.stdout == ''

# --- checks before the first epoch --------------------------------------------------------------------------------------

def test_corrupt_test_image_fails_before_epoch_1(tmp_path):
    root = fake_scut_fbp5500(tmp_path / 'scut', n_per_group=10)
    victim = root / 'Images' / _test_names(root)[3]
    victim.write_bytes(b'not a jpeg')
    out = tmp_path / 'run'
    r = script('fbp_train', '--data', 'scut', '--root', str(root), '--val-frac', '0.2', '--img-size', '32', '--width-mult', '0.25',
               '--arch', 'compact', '--model', 'mamba_cnn_A', '--batch-size', '8', '--device', 'cpu', '--no-progress', '--out', str(out))
    assert r.returncode == 2, r.stderr
    assert 'fbp_train: error: the test split' in r.stderr and str(victim) in r.stderr, r.stderr
    assert 'epoch' not in r.stdout and not (out / 'last.pt').exists() and not (out / 'model.pt').exists()

def test_truncated_image_found_by_the_full_check(tmp_path):
    "A truncated JPEG passes the header check; with the image cache (--cache memory) every image is decoded first."
    root = fake_scut_fbp5500(tmp_path / 'scut', n_per_group=10)
    victim = root / 'Images' / _test_names(root)[5]
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(ValueError, match=f'the test split: .*{victim.name}'):
        quiet(run, RunConfig(root=str(root), cache='memory', out=str(tmp_path / 'run'), **SCUT_KW), progress=False)
    assert not (tmp_path / 'run' / 'last.pt').exists()

def test_out_is_a_file(tmp_path):
    f = tmp_path / 'taken'
    f.write_text('x')
    r = script('fbp_train', *TINY, '--out', str(f))
    assert r.returncode == 2 and f'fbp_train: error: --out {f}: exists and is a file' in r.stderr, r.stderr
    with pytest.raises(ValueError, match='is a file, not a folder'): check_out(f / 'below')
    assert check_out(tmp_path / 'new' / 'deeper') == tmp_path / 'new' / 'deeper' and not (tmp_path / 'new').exists()   # creates nothing

def test_resume_from_model_pt_is_refused(scut):
    _, res = scut
    out = res['none'].out
    r = script('fbp_train', '--resume', str(out / 'model.pt'), '--no-progress')
    assert r.returncode == 2, r.stderr
    assert f'--resume {out / "model.pt"}: not a resumable checkpoint' in r.stderr and 'last.pt' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr

def test_empty_split_and_missing_images(tmp_path):
    root = fake_scut_fbp5500(tmp_path / 'scut', n_per_group=10)
    gone = root / 'Images' / _test_names(root)[0]
    gone.unlink()
    args = ['--data', 'scut', '--root', str(root), '--val-frac', '0.2', '--img-size', '32', '--width-mult', '0.25', '--arch', 'compact',
            '--model', 'mamba_cnn_A', '--batch-size', '8', '--device', 'cpu', '--no-progress']
    r = script('fbp_train', *args, '--out', str(tmp_path / 'a'))
    assert r.returncode == 2 and gone.name in r.stderr and 'skip' in r.stderr, r.stderr
    r = script('fbp_train', *args, '--on-missing', 'skip', '--out', str(tmp_path / 'b'))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / 'b' / 'metrics.json').read_text())
    assert m['skipped'] == {'train': 0, 'val': 0, 'test': 1} and m['test']['n'] == len(_test_names(root)) - 1
    assert m['config']['run']['on_missing'] == 'skip' and 'skipped 1 listed images' in r.stdout
    for n in _test_names(root)[1:]: (root / 'Images' / n).unlink()          # every test image gone: an empty split
    with pytest.raises(ValueError, match='the test split is empty'):
        quiet(run, RunConfig(root=str(root), on_missing='skip', out=str(tmp_path / 'c'), **SCUT_KW), progress=False)

# --- messages instead of tracebacks ----------------------------------------------------------------------------------------

def test_non_utf8_file_names(scut, tmp_path):
    _, res = scut
    from fbp_nb.synth import SynthFaces
    name = os.fsdecode(b'face\xff.png')                                 # not valid UTF-8: a surrogate escape in Python
    SynthFaces(1, img_size=32, split='test').render(0).save(tmp_path / name)
    exe = shutil.which('fbp_predict', path=os.path.dirname(sys.executable)) or shutil.which('fbp_predict')
    r = subprocess.run([exe, str(res['none'].out / 'model.pt'), os.fsencode(tmp_path / name), '--device', 'cpu'], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    line = r.stdout.decode('utf-8').strip().splitlines()[-1]              # stdout is valid UTF-8 ...
    assert line.split('\t')[0] == str(tmp_path / 'face\\udcff.png')     # ... the bad byte printed as an escape
    r = subprocess.run([exe, str(res['none'].out / 'model.pt'), bytes(tmp_path) + b'/gone\xff.png'], capture_output=True, timeout=300)
    assert r.returncode == 2 and b'gone\\udcff.png not found' in r.stderr and b'Traceback' not in r.stderr, r.stderr

def test_error_messages_name_the_file(tmp_path, monkeypatch):
    from fbp_nb.cli import error_message
    e = OSError(errno.ENOSPC, 'No space left on device', str(tmp_path / 'last.pt'))
    assert error_message(e) == f"No space left on device: {tmp_path / 'last.pt'}: free some space or write elsewhere (--out)"
    assert 'Permission denied: /x/y' in error_message(PermissionError(errno.EACCES, 'Permission denied', '/x/y'))
    assert error_message(OverflowError('cannot convert float infinity to integer')) is not None
    assert 'IndexError' in error_message(IndexError('index 42 is out of bounds for axis 0 with size 5'))
    assert error_message(MemoryError()).startswith('out of memory: lower --batch-size')
    assert error_message(TypeError('a bug')) is None and error_message(AttributeError('a bug')) is None   # bugs keep their traceback
    # a text file in UTF-16: the message names it
    root = fake_scut_fbp5500(tmp_path / 'scut', n_per_group=10)
    f = root / 'train_test_files' / SCUT_6040 / 'test.txt'
    f.write_bytes(f.read_text().encode('utf-16'))
    r = script('fbp_train', '--data', 'scut', '--root', str(root), '--img-size', '32', '--device', 'cpu', '--no-progress',
               '--out', str(tmp_path / 'run'))
    assert r.returncode == 2 and 'Traceback' not in r.stderr and 'test.txt' in r.stderr, r.stderr
    # a decompression bomb: refused, naming the file
    from PIL import Image
    from fbp_nb.synth import SynthFaces
    SynthFaces(1, img_size=64, split='test').render(0).save(tmp_path / 'big.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
    from fbp_nb.data import load_image
    with pytest.raises(Exception) as ei: load_image(tmp_path / 'big.png')
    msg = error_message(ei.value)
    assert msg is not None and 'big.png' in msg

# --- scales and crops -------------------------------------------------------------------------------------------------------

def test_scale_mapping_across_data_sets(scut, tmp_path):
    "A SCUT model (1-5) scored on MEBeauty (1-10): predictions mapped onto 1-10 before PC/MAE/RMSE, and said so."
    _, res = scut
    ckpt = res['none'].out / 'model.pt'
    meb = fake_mebeauty(tmp_path / 'meb', n=6)
    m, _ = evaluate(ckpt, device='cpu', data='mebeauty', root=str(meb))
    ds = load_splits('mebeauty', str(meb), img_size=32, only=('test',))['test']
    pred = scorer(ckpt, ds, device='cpu').predict(ds).numpy().astype(np.float64)
    ref = regression_metrics(ds.scores.astype(np.float64), rescale_scores(pred, (1., 5.), (1., 10.)))
    assert m['mapped_from'] == [1.0, 5.0] and m['n'] == len(ds)
    for k in ('PC', 'MAE', 'RMSE'): assert abs(m[k] - ref[k]) < 1e-6, k
    r = script('fbp_eval', str(ckpt), '--data', 'mebeauty', '--root', str(meb), '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    assert 'mapped linearly onto the score scale of mebeauty' in r.stdout
    assert r.stdout.strip().splitlines()[-1] == f"PC={m['PC']:.3f} MAE={m['MAE']:.3f} RMSE={m['RMSE']:.3f}"

def test_eval_loads_only_the_scored_split(scut, tmp_path):
    "fbp_eval --split test reads only the test list: a broken train list does not stop it."
    root, res = scut
    copy = tmp_path / 'scut'
    shutil.copytree(root, copy)
    (copy / 'train_test_files' / SCUT_6040 / 'train.txt').write_text('this is not a split file\n')
    m, _ = evaluate(res['none'].out / 'model.pt', device='cpu', root=str(copy), split='test')
    assert m == res['none'].test
    with pytest.raises(ValueError, match='train.txt'): evaluate(res['none'].out / 'model.pt', device='cpu', root=str(copy), split='val')

def test_align_is_stored_and_applied(scut, tmp_path, monkeypatch):
    "Each checkpoint predicts on the crop it was trained with: the aligner runs for --align landmarks, not for none."
    root, res = scut
    assert read_run(res['landmarks'].out / 'model.pt')['config']['run']['align'] == 'landmarks'
    assert read_run(res['none'].out / 'model.pt')['config']['run']['align'] == 'none'
    assert evaluate(res['landmarks'].out / 'model.pt', device='cpu')[0] == res['landmarks'].test   # eval: the same landmark crop
    assert res['landmarks'].test != res['none'].test
    import fbp_nb.beauty as T
    calls = []
    def fake_align(img, size): calls.append(size); return img.crop((4, 4, img.width - 4, img.height - 4)).resize((size, size)), {}
    monkeypatch.setattr(T, 'align_photo', fake_align)
    monkeypatch.setattr(T, 'FaceAligner', lambda size: None)            # no OpenCV needed for this test
    photo = root / 'Images' / _test_names(root)[0]
    for a, n_calls in (('none', 0), ('landmarks', 1)):
        calls.clear(); notes = []
        predict_photos(res[a].out / 'model.pt', [photo], device='cpu', notes=notes)
        assert len(calls) == n_calls, (a, calls)
        assert notes[0].startswith('crop: ' + ('the whole photo' if a == 'none' else "the OpenCV aligner's crop")), notes
    calls.clear()
    predict_photos(res['landmarks'].out / 'model.pt', [photo], align='none', device='cpu', notes=(notes := []))   # an explicit override ...
    assert calls == [] and 'NOT the crop the model was trained with' in notes[0]                                # ... is said out loud
    # the command line: the stored crop is named (with OpenCV: the aligner runs; without: a clear error, never a silent whole photo)
    r = script('fbp_predict', str(res['landmarks'].out / 'model.pt'), str(photo), '--device', 'cpu')
    assert 'landmark' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    try: import cv2  # noqa: F401
    except ImportError: assert r.returncode == 2 and '--align landmarks' in r.stderr and 'OpenCV' in r.stderr, r.stderr
    r = script('fbp_predict', str(res['none'].out / 'model.pt'), str(photo), '--device', 'cpu')
    assert r.returncode == 0 and 'crop: the whole photo' in r.stderr, r.stderr

def test_align_options_checked_early(tmp_path):
    r = script('fbp_train', *TINY, '--align', 'landmarks', '--out', str(tmp_path / 'x'))
    assert r.returncode == 2 and '--align landmarks: the synthetic faces' in r.stderr, r.stderr
    meb = fake_mebeauty(tmp_path / 'meb')
    with pytest.raises(ValueError, match="align='landmarks' needs the landmark files of SCUT-FBP5500"):
        load_splits('mebeauty', str(meb), img_size=32, align='landmarks')
    try: import cv2  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match='--align detector'): load_splits('mebeauty', str(meb), img_size=32, align='detector')
