"""Test-time augmentation (the horizontal flip) against a hand computation, and `fbp_predict`'s face check: a picture of
noise is scored with a warning naming the file and a `face_found=False` row; a real SCUT-FBP5500 face (when the data is
here) gets neither."""
import contextlib, io, os, shutil, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from fbp_nb.beauty import (predict_photos, evaluate_regressor, scorer, eval_transform, load_splits, photo_table, find_face,
                           NoFaceWarning, FlipTTA)
from fbp_nb.train import load_run, evaluate_run, predict_run
from fbp_nb.learner import TargetScaler
from fbp_nb.data import find_data_root

SCUT = find_data_root('SCUT-FBP5500')

def script(name, *args, timeout=1800):
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    assert exe, f'the `{name}` console script is not installed: pip install -e ".[dev]"'
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, 'OMP_NUM_THREADS': '1'})

@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    "A tiny synthetic run, trained by `fbp_train` (in this process: a second Python start costs minutes on a busy CPU)."
    from fbp_nb.cli import train_main
    out = tmp_path_factory.mktemp('tta') / 'run'
    with contextlib.redirect_stdout(io.StringIO()):
        rc = train_main(['--epochs', '1', '--n-train', '64', '--n-val', '16', '--n-test', '16', '--out', str(out), '--device', 'cpu'])
    assert rc == 0
    return out

@pytest.fixture(scope='module')
def noise(tmp_path_factory):
    p = tmp_path_factory.mktemp('pics') / 'noise.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(p)
    return p

def _hand_tta(ckpt, x):
    "The flip TTA by hand: mean of model(x) and model(flip(x)), decoded with the stored target range."
    net, _, _ = load_run(ckpt)
    ts = TargetScaler(**net.run_info['target_scaler'])
    with torch.no_grad(): return ts.decode((net(x).reshape(-1) + net(torch.flip(x, dims=(-1,))).reshape(-1)) / 2)

def test_flip_tta_module():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.LazyLinear(1)).eval()
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(FlipTTA(net)(x), (net(x) + net(torch.flip(x, dims=(-1,)))) / 2)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2, 1))
    sym = torch.cat([x, x.flip(-1)], -1)                       # a left-right symmetric image: both views are the same
    torch.testing.assert_close(FlipTTA(net)(sym), net(sym))

def test_tta_matches_hand_computation(tiny_run, tmp_path):
    ckpt = tiny_run / 'model.pt'
    c = load_run(ckpt)[1]
    ds = load_splits('synth', img_size=c.img_size, sizes=(c.n_train, c.n_val, c.n_test), seed=c.seed, only=('test',))['test']
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    hand = _hand_tta(ckpt, x)
    got = scorer(ckpt, ds, device='cpu', tta=True).predict(ds).reshape(-1)
    torch.testing.assert_close(got, hand, rtol=1e-5, atol=1e-5)
    m, _ = evaluate_regressor(ckpt, device='cpu', tta=True)
    assert m['tta'] == 'flip' and m['n'] == len(ds)
    assert m['MAE'] == pytest.approx(float(np.abs(hand.numpy() - ds.scores).mean()), abs=1e-5)
    assert evaluate_run(tiny_run, device='cpu', tta=True).metrics == m        # the engine passes the option through
    assert 'tta' not in evaluate_regressor(ckpt, device='cpu')[0]
    # photos: predict_photos(tta=True) against the same hand computation on the photos' tensors
    paths = []
    for i in range(3):
        ds.base.render(i).save(p := tmp_path / f'face{i}.png'); paths.append(p)
    rows = predict_run(ckpt, paths, device='cpu', notes=[], tta=True, check_face=False)
    xs = torch.stack([eval_transform(c.img_size)(Image.open(p).convert('RGB')) for p in paths])
    np.testing.assert_allclose([r.raw for r in rows], _hand_tta(ckpt, xs).numpy(), rtol=1e-5, atol=1e-5)

def test_noise_is_warned_and_marked(tiny_run, noise):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        rows = predict_photos(tiny_run / 'model.pt', [noise], device='cpu', notes=[])
    assert [r.face_found for r in rows] == [False] and rows[0].path == str(noise)
    path, score, raw = rows[0]                                   # still the (path, score, raw) triple callers unpack
    assert 1 <= score <= 5
    w = [x for x in caught if x.category is NoFaceWarning]
    assert len(w) == 1 and str(noise) in str(w[0].message) and 'no face found' in str(w[0].message), [str(x.message) for x in caught]
    assert photo_table(rows)['face_found'].tolist() == [False]
    with warnings.catch_warnings(record=True) as caught:         # the check can be turned off
        warnings.simplefilter('always')
        rows = predict_photos(tiny_run / 'model.pt', [noise], device='cpu', notes=[], check_face=False)
    assert rows[0].face_found is None and not [x for x in caught if x.category is NoFaceWarning]

def test_small_pictures_are_enlarged_for_the_check():
    found, why = find_face(Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)))
    assert found is False and '50x40' in why                     # the original size is named

@pytest.mark.skipif(SCUT is None, reason='SCUT-FBP5500 not found')
def test_real_face_not_warned(tiny_run):
    faces = sorted((SCUT / 'Images').glob('*.jpg'))[:3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        rows = predict_photos(tiny_run / 'model.pt', faces, device='cpu', notes=[])
    assert [r.face_found for r in rows] == [True] * 3
    assert not [x for x in caught if x.category is NoFaceWarning]

def test_fbp_predict_prints_a_warning_line(tiny_run, noise):
    r = script('fbp_predict', str(tiny_run / 'model.pt'), str(noise), '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().split('\t')[0] == str(noise)          # still scored
    lines = [l for l in r.stderr.splitlines() if 'warning' in l.lower()]        # 'NoFaceWarning: ...' (or 'fbp_predict: warning: ...')
    assert len(lines) == 1 and str(noise) in lines[0] and 'no face found' in lines[0], r.stderr
    if SCUT is not None:
        face = sorted((SCUT / 'Images').glob('*.jpg'))[0]
        r = script('fbp_predict', str(tiny_run / 'model.pt'), str(face), '--device', 'cpu')
        assert r.returncode == 0 and 'warning' not in r.stderr.lower(), r.stderr
