"Class-activation maps (fbp_nb.interpret): against Grad-CAM by hand, every method, default layers, model state, sanity tools, overlays."
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip('pytorch_grad_cam')
from fbp_nb.interpret import (METHODS, cam, cam_class, resolve_layer, tokens_to_grid, kept_state, rank_corr, reinit_copy,
                              randomization_test, synth_face_masks, energy_share, write_overlays, overlay)
from fbp_nb.models import create_model, list_models
from fbp_nb.synth import SynthFaces


def _gradcam_by_hand(model, x, layer, sign=1.):
    "Grad-CAM from two hooks: weights = mean gradient over space, ReLU(sum w A), min-max, bilinear up, min-max."
    store = {}
    def hook(mod, inp, out):
        store['A'] = out.detach()
        out.register_hook(lambda g: store.__setitem__('G', g))
    h = layer.register_forward_hook(hook)
    try: (sign * model.eval()(x.clone().requires_grad_(True))[:, 0]).sum().backward()
    finally: h.remove()
    m = F.relu((store['G'].mean((2, 3), keepdim=True) * store['A']).sum(1))
    def mm(t):
        t = t - t.amin((1, 2), keepdim=True)
        return t / (1e-7 + t.amax((1, 2), keepdim=True))
    return mm(F.interpolate(mm(m)[:, None], size=x.shape[-2:], mode='bilinear', align_corners=False)[:, 0]), m


def _with_head(m, sd=0.2, seed=0):
    "A network whose head says something (a fresh head outputs ~0.5 for every input)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.head.parameters(): p.copy_(torch.randn(p.shape, generator=g) * sd)
    return m


@pytest.fixture(scope='module')
def compact():
    torch.manual_seed(0)
    return _with_head(create_model('mamba_cnn_D_compact'))


def test_gradcam_matches_hand_reference(compact):
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    import copy
    gated = copy.deepcopy(compact)
    for bn in gated.modules():                  # calibrate BatchNorm on random inputs: at init the last block's features are ~1e-8
        if isinstance(bn, nn.BatchNorm2d): bn.reset_running_stats(); bn.momentum = None   # and its gate a flat sigmoid(0) = 0.5
    gated.train()
    with torch.no_grad(): gated(torch.randn(32, 3, 64, 64))
    gated.eval()
    n_compared = {}
    for net, layer, arg in ((compact, compact.blocks[-1], None), (gated, gated.blocks[-1].gate, 'gate')):
        for sign in (1., -1.):                  # gates near 0.5 everywhere: sum_k w_k g_k ~ 0.5 sum_k w_k, often < 0 (map 0)
            ref, raw = _gradcam_by_hand(net, x, layer, sign)
            net.zero_grad(set_to_none=True)
            got = cam(net, x, layer=arg, sign=sign)
            assert got.shape == (8, 64, 64) and got.dtype == torch.float32
            # min-max scaling turns a map that is constant up to rounding into noise: compare the maps with a real range
            ok = (raw.amax((1, 2)) - raw.amin((1, 2))) > 1e-4 * raw.abs().amax().clamp(min=1e-30)
            torch.testing.assert_close(got[ok], ref[ok], atol=1e-4, rtol=0)   # maps span [0, 1]
            n_compared[arg] = n_compared.get(arg, 0) + int(ok.sum())
            assert (got[~ok].amax((1, 2)) <= 1).all()
    assert n_compared[None] >= 8 and n_compared['gate'] >= 3, n_compared


def test_sign_flips_what_is_explained(compact):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    up, down = cam(compact, x, sign=1), cam(compact, x, sign=-1)
    assert not torch.allclose(up, down)


def test_model_state_is_kept(compact):
    m = compact
    m.train(); m.blocks[0].requires_grad_(False)
    w = m.head[1].weight
    w.grad = torch.full_like(w, 3.)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    for meth in ('gradcam', 'scorecam', 'ablationcam'):
        cam(m, x, meth)
        assert all(b.training for b in m.modules())
        assert not any(p.requires_grad for p in m.blocks[0].parameters())
        assert all(p.requires_grad for n, p in m.named_parameters() if not n.startswith('blocks.0.'))
        assert torch.equal(w.grad, torch.full_like(w, 3.)) and m.blocks[-1].project[0].weight.grad is None
        assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    m.eval(); m.requires_grad_(True); w.grad = None
    # kept_state restores after an error too
    with pytest.raises(RuntimeError):
        with kept_state(m):
            m.train(); raise RuntimeError('inside')
    assert not m.training and all(p.requires_grad for p in m.parameters())


def test_every_method_conv_and_vit(compact):
    import torchvision
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=1)
    nn.init.normal_(vit.heads.head.weight, 0, 0.5)             # torchvision zero-initialises the head: all gradients would be 0
    layers, rt, _ = resolve_layer(vit)
    assert layers == [vit.encoder.layers[-1].ln_1] and rt(torch.randn(2, 17, 32)).shape == (2, 32, 4, 4)
    x = torch.randn(2, 3, 64, 64)
    for name in METHODS:
        for net in (compact, vit):
            c = cam(net, x, name)
            assert c.shape == (2, 64, 64) and c.min() >= 0 and c.max() <= 1, (name, type(net).__name__)
            if name not in ('kpcacam',): assert c.max() > 0.99, (name, type(net).__name__)   # scaled to [0, 1]
    assert vit.encoder.layers[-1].ln_1 is layers[0]             # AblationCAM put the layer back


def test_bad_arguments(compact):
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match='did you mean gradcam'): cam(compact, x, 'gradcm')
    with pytest.raises(ValueError, match=r'\(b, c, h, w\)'): cam(compact, torch.randn(64, 64))
    with pytest.raises(ValueError, match='no gates'): cam(create_model('mamba_cnn_A_compact'), x, layer='gate')
    with pytest.raises(ValueError, match='no submodule'): cam(compact, x, layer='blocks.42')
    with pytest.raises(ValueError, match='not a submodule'): cam(compact, x, layer=nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match='batch_size'): cam(compact, x, batch_size=0)
    assert cam_class('Grad-CAM++')[0] == 'gradcam++'


def test_acceptance_mamba_cnn_D_224():
    c = cam(create_model('mamba_cnn_D'), torch.randn(2, 3, 224, 224))
    assert c.shape == (2, 224, 224) and c.dtype == torch.float32 and 0 <= c.min() and c.max() <= 1


@pytest.mark.parametrize('name,attr', [('mobilenet_v2', 'features.18'), ('resnext50', 'layer4.2'), ('mamba_cnn_A', 'blocks.16'),
                                       ('inception_v3', 'Mixed_7c')])
def test_default_layers(name, attr):
    m = create_model(name)
    layers, rt, _ = resolve_layer(m)
    assert layers == [m.get_submodule(attr)] and rt is None
    size = 75 if name == 'inception_v3' else 64
    c = cam(m, torch.randn(1, 3, size, size), 'eigencam')
    assert c.shape == (1, size, size)


def test_probe_for_unknown_models():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__(); self.b = nn.Conv2d(4, 5, 3, 2); self.a = nn.Conv2d(3, 4, 3); self.head = nn.Linear(5, 1)
        def forward(self, x): return self.head(self.b(self.a(x)).mean((2, 3)))   # b is registered first but runs last
    t = Tiny()
    assert resolve_layer(t, None, torch.zeros(1, 3, 32, 32))[0] == [t.b]
    assert cam(t, torch.randn(2, 3, 32, 32)).shape == (2, 32, 32)


def test_tokens_to_grid():
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
    t = torch.randn(2, 1 + 14 * 14, 8)
    torch.testing.assert_close(tokens_to_grid(t, prefix=1), vit_reshape_transform(t))
    x = torch.randn(2, 12, 3)
    assert torch.equal(tokens_to_grid(x, (3, 4))[1, :, 2, 1], x[1, 2 * 4 + 1])
    with pytest.raises(ValueError, match='square'): tokens_to_grid(torch.randn(1, 10, 4))


@pytest.mark.parametrize('name', ['vision_mamba_tiny', 'vm_beautynet'])
def test_token_models_with_cam_layer(name):
    if name not in list_models(): pytest.skip(f'{name} is not registered (its module is not there yet)')
    m = create_model(name)
    assert callable(getattr(m, 'cam_layer', None)), f'{name} has no cam_layer()'
    layers, rt, what = resolve_layer(m)
    assert what == 'model.cam_layer()'
    c = cam(m, torch.randn(2, 3, 224, 224))
    assert c.shape == (2, 224, 224) and 0 <= c.min() and c.max() <= 1


def test_rank_corr_and_randomisation_mechanics(compact):
    from scipy.stats import spearmanr
    a, b = torch.rand(3, 5, 5), torch.rand(3, 5, 5)
    a[0, :2] = 0                                                # ties
    np.testing.assert_allclose(rank_corr(a, b), [spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(3)])
    c = a.clone(); c[1] = 0.5
    assert np.isnan(rank_corr(c, b)[1])
    # the re-initialised copy is seeded: a model that *is* that copy gets a correlation of 1
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    r = randomization_test(reinit_copy(compact, 0), x, seed=0)
    assert r['maps'].shape == (4, 64, 64) and np.isfinite(r['spearman']).all()
    np.testing.assert_allclose(r['spearman'], 1.)
    r = randomization_test(compact, torch.randn(4, 3, 64, 64), seed=0)
    assert r['spearman'].shape == (4,)
    assert not all(torch.equal(p, q) for p, q in zip(compact.parameters(), reinit_copy(compact).parameters()))


def test_face_masks_and_energy_share():
    ds = SynthFaces(3, img_size=64, split='test')
    masks = synth_face_masks(ds)
    assert masks.shape == (3, 64, 64) and masks.dtype == torch.bool
    area = masks.float().mean((1, 2))
    assert ((area > 0.1) & (area < 0.45)).all()
    # the face's landmarks (eyes, nose, mouth) lie inside its mask; the image corners do not
    for i in range(3):
        for x, y in ds.landmarks[i][6:]:                        # eye_left ... mouth_bottom
            assert masks[i, int(round(y)), int(round(x))]
        assert not masks[i, 0, 0] and not masks[i, -1, -1]
    assert synth_face_masks(ds, [1], grow=1.2).sum() > masks[1].sum()
    maps = torch.rand(3, 64, 64)
    loop = [float((maps[i] * masks[i]).sum() / maps[i].sum()) for i in range(3)]
    torch.testing.assert_close(energy_share(maps, masks), torch.tensor(loop), atol=1e-5, rtol=0)
    torch.testing.assert_close(energy_share(torch.ones(3, 64, 64), masks), area)
    assert torch.isnan(energy_share(torch.zeros(1, 64, 64), masks[:1])).all()


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    from fbp_nb.train import RunConfig, run
    out = tmp_path_factory.mktemp('tiny')
    run(RunConfig(data='synth', n_train=16, n_val=8, n_test=8, epochs=1, img_size=48, batch_size=8, out=str(out)), progress=False)
    photos = []
    ds = SynthFaces(2, img_size=80, split='test')
    for i in range(2):
        p = out/f'face{i}.png'; ds.render(i).save(p); photos.append(p)
    return out/'model.pt', photos


def test_write_overlays(tiny_run, tmp_path):
    from PIL import Image
    from fbp_nb.beauty import eval_transform
    from fbp_nb.train import load_run
    ckpt, photos = tiny_run
    files = write_overlays(ckpt, photos + [photos[0]], tmp_path/'cam', align=False)
    assert [f.name for f in files] == ['face0_gradcam.png', 'face1_gradcam.png', 'face0_gradcam_2.png']
    assert all(f.is_file() and Image.open(f).size == (224, 224) for f in files)
    # the same overlay by hand: the checkpoint's eval transform -> cam -> upsample -> blend
    net, _, _ = load_run(ckpt); cfg = net.run_info
    img = Image.open(photos[1]).convert('RGB')
    heat = cam(net, eval_transform(cfg['img_size'], **cfg['norm'])(img)[None])[0]
    heat = F.interpolate(heat[None, None], size=(224, 224), mode='bilinear', align_corners=False)[0, 0].clamp(0, 1)
    want = overlay(np.asarray(img.resize((224, 224), Image.BILINEAR), np.float32) / 255., heat.numpy())
    np.testing.assert_array_equal(np.asarray(Image.open(files[1])), want)
    # a model instead of a checkpoint, another method, aligned (falls back to unaligned with a note)
    files = write_overlays(net, photos[:1], tmp_path/'cam2', method='gradcam++', img_size=48)
    assert [f.name for f in files] == ['face0_gradcampp.png']
    # another crop than the training one is said, as fbp_predict says it; a photo without a found face is used whole
    pytest.importorskip('cv2')
    notes = []
    files = write_overlays(ckpt, photos[:1], tmp_path/'cam4', align='detector', notes=notes)
    assert len(files) == 1 and any('NOT the crop the model was trained with (none)' in n for n in notes), notes
    assert any('face0.png' in n and 'unaligned' in n for n in notes), notes
    with pytest.raises(FileNotFoundError, match='image not found'): write_overlays(ckpt, [tmp_path/'nope.png'], tmp_path/'cam3')
    with pytest.raises(ValueError, match='unknown method'): write_overlays(ckpt, photos, tmp_path/'cam3', method='nope')
    assert not (tmp_path/'cam3').exists()


def test_branches_by_name():
    "A multi-branch model's `cam_layers()` names are layer names for `cam` (VM-BeautyNet: 'vit', 'mamba')."
    if 'vm_beautynet_compact' not in list_models(): pytest.skip('vm_beautynet_compact is not registered')
    torch.manual_seed(0)
    m = create_model('vm_beautynet_compact')
    named = m.cam_layers()
    assert set(named) == {'vit', 'mamba'}
    x = torch.randn(2, 3, 64, 64)
    maps = {k: cam(m, x, layer=k) for k in named}
    for k, c in maps.items():
        assert c.shape == (2, 64, 64) and 0 <= c.min() and c.max() <= 1
        assert resolve_layer(m, k)[0] == [named[k][0]]
    torch.testing.assert_close(cam(m, x), maps['mamba'])          # the model's own default branch
