"""fbp_nb.robustness: each photo condition against a hand computation, deterministic per seed, and `robustness_table` end to
end on a tiny run trained on a fake SCUT-FBP5500 folder (clean = fbp_eval's test metrics, resumable), plus a small
real-data run when SCUT-FBP5500 is on this machine."""
import contextlib, io
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from fbp_nb.data import fake_scut_fbp5500, SCUTFBP5500, align_face, load_image, find_data_root
from fbp_nb.beauty import eval_transform, evaluate_regressor
from fbp_nb.train import run, RunConfig
from fbp_nb.robustness import (CONDITIONS, frame_face, border_colour, jpeg, downscale, rotate, colour_cast, brightness, grayscale,
                               hflip, condition_image, subset_indices, robustness_table, PRED_FILE)

SCUT = find_data_root('SCUT-FBP5500')

@pytest.fixture(scope='module')
def fake(tmp_path_factory):
    return fake_scut_fbp5500(tmp_path_factory.mktemp('rob') / 'scut', n_per_group=10, size=96)

@pytest.fixture(scope='module')
def tiny(fake, tmp_path_factory):
    out = tmp_path_factory.mktemp('rob') / 'run'
    with contextlib.redirect_stdout(io.StringIO()):
        r = run(RunConfig(data='scut', root=str(fake), val_frac=0.2, img_size=32, model='mamba_cnn_A', arch='compact',
                          model_kwargs={'width_mult': 0.25}, epochs=1, batch_size=8, device='cpu', out=str(out)), progress=False)
    return r

@pytest.fixture
def img():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))

def test_frame_face_is_align_face_at_scale_1(fake):
    base = SCUTFBP5500(fake, split='test')
    for i in range(3):
        photo, lm = load_image(base.paths[i]), base.landmark(i)
        if lm is None: continue
        assert np.array_equal(np.asarray(frame_face(photo, lm, 40, fill=(0, 0, 0))), np.asarray(align_face(photo, lm, 40)[0]))
    assert frame_face(photo, lm, (40, 30), scale=1.6).size == (30, 40)

def test_photo_conditions_by_hand(img, tmp_path):
    rng = lambda: np.random.default_rng(0)
    img.save(tmp_path / 'q.jpg', quality=20)
    assert np.array_equal(np.asarray(jpeg(20)(img, rng())), np.asarray(Image.open(tmp_path / 'q.jpg').convert('RGB')))
    assert not np.array_equal(np.asarray(jpeg(20)(img, rng())), np.asarray(img))
    g = np.asarray(grayscale()(img, rng()))
    assert np.array_equal(g[..., 0], np.asarray(img.convert('L'))) and np.array_equal(g[..., 0], g[..., 2])
    tf = eval_transform(32)
    torch.testing.assert_close(tf(hflip()(img, rng())), torch.flip(tf(img), dims=(-1,)), atol=1e-5, rtol=0)
    a = np.asarray(img, np.float64)
    assert np.abs(np.asarray(brightness(0.5)(img, rng()), np.float64) - a * 0.5).max() <= 1
    assert np.abs(np.asarray(brightness(1.5)(img, rng()), np.float64) - np.clip(a * 1.5, 0, 255)).max() <= 1
    assert np.abs(np.asarray(colour_cast()(img, rng()), np.float64) - np.clip(a * [1.2, 1.0, 0.8], 0, 255)).max() <= 1
    sign = 15 if rng().random() < 0.5 else -15
    assert np.array_equal(np.asarray(rotate(15)(img, rng())),
                          np.asarray(img.rotate(sign, resample=Image.Resampling.BILINEAR, fillcolor=border_colour(img))))
    outs = {np.asarray(rotate(15)(img, np.random.default_rng(s))).tobytes() for s in range(8)}
    assert len(outs) == 2                                                # both directions are drawn
    d = downscale(16)(img, rng())
    assert d.size == img.size and np.array_equal(np.asarray(d), np.asarray(
        img.resize((16, 16), Image.Resampling.BILINEAR).resize((40, 48), Image.Resampling.BILINEAR)))

def test_conditions_deterministic_and_named(fake):
    base = SCUTFBP5500(fake, split='test', size=40)                    # 'clean' is the data set's own image at its size
    for name in CONDITIONS:
        a, wa = condition_image(name, base, 2, 40, seed=3)
        b, wb = condition_image(name, base, 2, 40, seed=3)
        assert np.array_equal(np.asarray(a), np.asarray(b)) and wa == wb and a.size == (40, 40), name
    assert condition_image('detector', base, 2, 40)[1] == 'no face found'      # random pixels: no face, the whole photo
    empty = base.names.index('CM1.jpg') if 'CM1.jpg' in base.names else None   # the fake folder's empty landmark file
    if empty is not None: assert condition_image('tight', base, empty, 40)[1] == 'no landmarks'

def test_subset_indices():
    assert list(subset_indices(5)) == [0, 1, 2, 3, 4] and list(subset_indices(2200, 3)) == [0, 1100, 2199]
    assert len(subset_indices(2200, 64)) == 64
    with pytest.raises(ValueError, match='at least 2'): subset_indices(10, 1)

def test_table_end_to_end_and_resume(tiny, tmp_path):
    tab = robustness_table(tiny.out, out=tmp_path / 'rob', device='cpu', log=(log := []).append)
    assert list(tab.condition) == list(CONDITIONS) and set(tab.n) == {tiny.test['n']} and len(log) == len(CONDITIONS)
    assert list(tab.columns[:8]) == ['condition', 'what', 'n', 'PC', 'MAE', 'RMSE', 'PC_drop', 'fallback']
    clean = tab.set_index('condition').loc['clean']
    assert clean.PC == pytest.approx(tiny.test['PC'], abs=1e-5) and clean.MAE == pytest.approx(tiny.test['MAE'], abs=1e-5)
    assert tab.PC_drop.iloc[0] == 0 and np.allclose(tab.PC_drop, clean.PC - tab.PC)
    assert tab.set_index('condition').loc['detector', 'fallback'] == tiny.test['n']     # no face in random pixels
    # resume: a partly written file (first 3 conditions) is completed, the rest scored again, with the same result
    pred = pd.read_csv(tmp_path / 'rob' / PRED_FILE)
    pred[pred.condition.isin(list(CONDITIONS)[:3])].to_csv(tmp_path / 'rob' / PRED_FILE, index=False)
    again = robustness_table(tiny.out, out=tmp_path / 'rob', device='cpu', log=(log := []).append)
    assert sum('scored earlier' in l for l in log) == 3
    pd.testing.assert_frame_equal(again, tab)
    with pytest.raises(ValueError, match='use another folder'): robustness_table(tiny.out, out=tmp_path / 'rob', device='cpu', limit=5)
    with pytest.raises(ValueError, match='not among'): robustness_table(tiny.out, conditions=['nope'], device='cpu')

def test_table_tta_and_limit(tiny):
    t = robustness_table(tiny.out, conditions=['flip'], tta=True, limit=10, device='cpu', log=lambda s: None)
    assert list(t.condition) == ['clean', 'flip'] and list(t.n) == [10, 10]
    assert t.PC[0] == pytest.approx(t.PC[1], abs=1e-4)           # flip TTA: a mirror image scores as the original

def test_synth_run_scored_on_scut(tmp_path, fake):
    with contextlib.redirect_stdout(io.StringIO()):
        r = run(RunConfig(n_train=32, n_val=8, n_test=8, img_size=32, model_kwargs={'width_mult': 0.25}, epochs=1, device='cpu',
                          out=str(tmp_path / 'synth')), progress=False)
    with pytest.raises(ValueError, match='pass root'): robustness_table(r.out, device='cpu')
    t = robustness_table(r.out, root=fake, conditions=['gray'], limit=6, device='cpu', log=lambda s: None)
    assert list(t.n) == [6, 6]

@pytest.mark.skipif(SCUT is None, reason='SCUT-FBP5500 not found')
def test_real_faces_framing(tiny):
    "On real SCUT faces the landmark framings and fbp_predict's crop find the face (no fallback) on a few test images."
    base = SCUTFBP5500(SCUT, split='test')
    for i in (0, 1000, 2000):
        for name in ('tight', 'loose', 'off_centre', 'detector'):
            im, why = condition_image(name, base, i, 64)
            assert why == '' and im.size == (64, 64), (name, i, why)
