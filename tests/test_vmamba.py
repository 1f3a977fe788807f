"Chapter 09 (fbp_nb.models.vmamba) and 10 (fbp_nb.models.vm_beautynet): cross-scan, SS2D on the course's scan, VSS/Vim blocks, Vision Mamba, VM-BeautyNet, registry, CLI."
import json, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch
import torchvision
from fbp_nb.models import create_model, list_models
from fbp_nb.models.vmamba import (cross_scan, cross_merge, diagonal_order, DirectionalSSM, SS2D, VSSBlock, BiMambaBlock, VisionMamba,
                                  vmamba_flops)
from fbp_nb.models.vm_beautynet import ViT, Fusion, FUSIONS, VMBeautyNet, MobileNetV2Tokens

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path(os.environ.get('FBP_WEIGHTS', REPO.parent / 'shared' / 'weights' / 'mobilenet_v2_imagenet.pth'))
if WEIGHTS.is_dir(): WEIGHTS = WEIGHTS / 'mobilenet_v2_imagenet.pth'

def diag_loop(h, w, anti):
    out = []
    for c in (range(h + w - 1) if anti else range(-(h - 1), w)):
        for i in range(h):
            j = c - i if anti else i + c
            if 0 <= j < w: out.append(i * w + j)
    return out

@pytest.mark.parametrize('k', [2, 4, 8])
def test_cross_scan_identity_and_adjoint(k):
    x = torch.randn(2, 3, 5, 7)
    xs = cross_scan(x, k)
    assert xs.shape == (2, k, 3, 35)
    torch.testing.assert_close(cross_merge(xs, k, (5, 7)), k * x)
    y = torch.randn_like(xs)
    torch.testing.assert_close((xs * y).sum(), (x * cross_merge(y, k, (5, 7))).sum(), rtol=1e-4, atol=1e-4)

def test_scan_orders_against_loops():
    x = torch.randn(1, 2, 5, 7)
    xs, flat = cross_scan(x, 8), x.flatten(2)
    assert torch.equal(xs[:, 0], flat) and torch.equal(xs[:, 1], x.transpose(2, 3).flatten(2))
    assert torch.equal(xs[:, 2], flat.flip(-1)) and torch.equal(xs[:, 3], xs[:, 1].flip(-1))
    for kk, anti in ((4, False), (5, True)):
        assert torch.equal(xs[:, kk], flat[..., diag_loop(5, 7, anti)])
        assert torch.equal(xs[:, kk + 2], xs[:, kk].flip(-1))
    for h, w in [(1, 1), (1, 5), (4, 1), (3, 4), (6, 6), (7, 5)]:
        for anti in (False, True): assert diagonal_order(h, w, anti).tolist() == diag_loop(h, w, anti)
    with pytest.raises(ValueError, match='k must be 2, 4 or 8'): cross_scan(x, 3)
    with pytest.raises(ValueError, match='cross_merge: y must be'): cross_merge(xs, 4, (5, 7))

@pytest.mark.parametrize('k', [2, 4, 8])
def test_directional_ssm_matches_reference_loop(k):
    torch.manual_seed(k)
    m = DirectionalSSM(6, k, d_state=3, d_model=4).double()
    xs = torch.randn(2, k, 6, 23, dtype=torch.float64, requires_grad=True)
    y, y_ref = m(xs), m.forward_ref(xs)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
    g, params = torch.randn_like(y), [xs] + list(m.parameters())
    for a, b in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(y_ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)

def test_blocks_shapes_and_global_reach():
    torch.manual_seed(0)
    assert VSSBlock(8, drop_path=0.1, mlp_ratio=2.0, d_state=2, k=8)(torch.randn(2, 5, 7, 8)).shape == (2, 5, 7, 8)
    assert BiMambaBlock(8, d_state=2)(torch.randn(2, 9, 8)).shape == (2, 9, 8)
    s = SS2D(8, d_state=2, k=4, d_conv=1)
    x = torch.randn(1, 6, 6, 8, requires_grad=True)
    s(x)[0, 0, 0].sum().backward()
    assert (x.grad.abs().sum(-1) > 0).all()        # the corner pixel's output depends on every input pixel
    with pytest.raises(ValueError, match='SS2D: expected'): s(torch.randn(1, 8, 6, 6))

def test_vision_mamba_and_cam_layer():
    vm = VisionMamba(depths=(1, 1, 1), dims=8, d_state=1, mlp_ratio=1.0)
    x = torch.randn(2, 3, 96, 80)
    assert vm.forward_features(x).shape == (2, 32, 6, 5)
    y = vm(x)
    assert y.shape == (2, 1) and ((y > 0) & (y < 1)).all()
    layer, reshape = vm.cam_layer()
    acts = []
    h = layer.register_forward_hook(lambda m, i, o: acts.append(o)); vm(x); h.remove()
    assert reshape is None and acts[0].shape == (2, 32, 6, 5)
    assert VisionMamba(depths=(1,), dims=8, block='vim', d_state=1)(torch.randn(1, 3, 32, 32)).shape == (1, 1)
    with pytest.raises(ValueError, match='block must be'): VisionMamba(block='x')

def test_flops_include_the_scan():
    f = vmamba_flops(VisionMamba(depths=(1, 1), dims=8, d_state=2, mlp_ratio=0), 64)
    assert f['scan'] > f['scan_seen'] > 0 and f['total'] == f['counted'] - f['scan_seen'] + f['scan']

def test_registry_maps_224_to_scores():
    names = list_models()
    for n in ('vision_mamba_tiny', 'vision_mamba_t', 'vm_beautynet', 'vm_beautynet_small', 'vm_beautynet_hybrid', 'vm_beautynet_compact', 'vit_b16', 'vit_small'):
        assert n in names
    x = torch.randn(2, 3, 224, 224)
    for n in ('vision_mamba_tiny', 'vm_beautynet'):
        m = create_model(n).eval()
        with torch.no_grad(): y = m(x)
        assert y.shape == (2, 1) and ((y > 0) & (y < 1)).all(), n
        rebuilt = create_model(n, **m.model_config['kwargs'])
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}

def test_vit_matches_torchvision():
    torch.manual_seed(0)
    cfg = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    ref = torchvision.models.VisionTransformer(**cfg, num_classes=1).eval()
    torch.nn.init.normal_(ref.heads.head.weight)
    vit = ViT(**cfg, out=None).eval()
    vit.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): torch.testing.assert_close(vit(x), ref(x), rtol=1e-5, atol=1e-5)
    layer, reshape = vit.cam_layer()
    acts = []
    h = layer.register_forward_hook(lambda m, i, o: acts.append(o)); vit(torch.randn(2, 3, 48, 64)); h.remove()
    assert reshape(acts[0]).shape == (2, 16, 6, 8)

def test_vit_loads_a_torchvision_imagenet_style_file(tmp_path):
    cfg = dict(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    tv = torchvision.models.VisionTransformer(**cfg, num_classes=1000)
    torch.save(tv.state_dict(), tmp_path / 'vit.pth')
    m = ViT(**cfg, weights=tmp_path / 'vit.pth')
    torch.testing.assert_close(m.conv_proj.weight, tv.conv_proj.weight)
    assert m.heads.head.weight.shape == (1, 16) and not any(k.startswith('heads.') for k in m.pretrained_keys)
    net = VMBeautyNet(vit=cfg, mamba='compact', weights=tmp_path / 'vit.pth')     # recognised as a ViT file: the ViT branch
    torch.testing.assert_close(net.vit.class_token, tv.class_token)
    with pytest.raises(FileNotFoundError, match='not found'): VMBeautyNet(vit='compact', mamba='compact', weights=tmp_path / 'none.pth')

def test_fusion_weights():
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    for kind in FUSIONS:
        f = Fusion(8, kind)
        torch.testing.assert_close(f.weights(a, b), torch.full((4, 2), 0.5))
    g = Fusion(8, 'global')
    with torch.no_grad(): g.logits.copy_(torch.tensor([1., 0.]))
    p = torch.tensor([1., 0.]).softmax(0)
    torch.testing.assert_close(g(a, b), p[0] * a + p[1] * b)
    assert len(g.trace) == 1 and abs(sum(g.trace[0]) - 1) < 1e-6
    g.eval(); g(a, b); assert len(g.trace) == 1                                    # only training batches are recorded
    with pytest.raises(ValueError, match='kind must be one of'): Fusion(8, 'max')

@pytest.mark.parametrize('branch', ['both', 'vit', 'mamba'])
def test_vm_beautynet_branches(branch):
    m = VMBeautyNet(vit='compact', mamba='compact', branch=branch, fusion='gated')
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 1)
    layers = m.cam_layers()
    assert set(layers) == ({'vit', 'mamba'} if branch == 'both' else {branch})
    assert (m.fusion is None) == (branch != 'both')

@pytest.mark.skipif(not WEIGHTS.is_file(), reason='ImageNet MobileNetV2 file not on this machine (set FBP_WEIGHTS)')
def test_hybrid_loads_the_mobilenet_v2_trunk():
    m = create_model('vm_beautynet_hybrid', pretrained=WEIGHTS).train()
    ref = torchvision.models.mobilenet_v2(weights=None).eval()
    ref.load_state_dict(torch.load(WEIGHTS, map_location='cpu', weights_only=True))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad(): torch.testing.assert_close(m.trunk(x), ref.features[:14](x), rtol=1e-5, atol=1e-5)   # BN frozen in train mode
    assert m.init_kwargs['bn_frozen'] and all(k.startswith('trunk.') for k in m.pretrained_keys) and len(m.pretrained_keys) > 100
    assert m(x).shape == (2, 1)
    with pytest.raises(ValueError, match='MobileNetV2 file'): create_model('vm_beautynet_small', pretrained=WEIGHTS)
    assert MobileNetV2Tokens(8, WEIGHTS)(x).shape == (2, 32, 16, 16)

def test_fbp_train_vm_beautynet_on_synth(tmp_path):
    exe = shutil.which('fbp_train', path=os.path.dirname(sys.executable)) or shutil.which('fbp_train')
    assert exe, 'the fbp_train console script is not installed'
    r = subprocess.run([exe, '--model', 'vm_beautynet', '--n-train', '48', '--n-val', '16', '--n-test', '24', '--img-size', '32',
                        '--epochs', '1', '--device', 'cpu', '--no-progress', '--out', str(tmp_path / 'run')],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert re.search(r'PC=(-?\d\.\d{3}|nan) MAE=\d+\.\d{3} RMSE=\d+\.\d{3}', r.stdout), r.stdout
    ck = torch.load(tmp_path / 'run' / 'model.pt', map_location='cpu', weights_only=True)
    assert ck['config']['model']['name'] == 'vm_beautynet_compact'
