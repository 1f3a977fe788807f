"""Every `#| cuda` cell of the notebooks, its code path run on the CPU at tiny size (issue 25), so the first Colab user
is not the first to run it. The device is a parameter ('cuda' is added where a GPU exists); each test names its cell.

| cell | what it does on a GPU | what the test runs |
|---|---|---|
| 01_scan #87b3a437 | scan backends on CUDA tensors vs the reference (outputs, last state, all gradients) | the same, every backend that runs on the device, three B/C shapes, l = 300 |
| 04_metrics #75a8e507 | `regression_metrics` on device tensors | the same |
| 05_learner #15fdc0a6 | Learner with AMP (float16 + GradScaler) and channels_last: 2 epochs, predict | the same Learner on CPU, channels_last, AMP in bfloat16 and float16 with a CPU GradScaler; + DDP over gloo |
| 07_losses #2ae8b114 | robust losses in float32/16/bf16 on device, backward, under autocast | the same, CPU autocast |
| 08_ensembles #daa0b071 | Dynamic ER-CNN recipe (5 members) on SCUT-FBP5500, then its ensemble | one member per architecture (all 5 with FBP_SLOW_TESTS=1) on a fake SCUT-FBP5500 at 75 px, 1 epoch, then `ensemble_from_runs(device=...)` |
| 08_ensembles #448468c1 | the recipe per fold (5 folds), mean/std table | the same loop and table, a 2-member light recipe per fold |

`test_every_cuda_cell_is_covered` fails when a notebook gains a `#| cuda` (or `gpu_cell`) cell that is not listed here.
`gpu_cell` itself (05_learner) is tested in its notebook (it prints a note and returns False without a GPU).
"""
import json, math, re
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
COVERED = {('01_scan', '87b3a437'), ('04_metrics', '75a8e507'), ('05_learner', '15fdc0a6'), ('07_losses', '2ae8b114'),
           ('08_ensembles', 'daa0b071'), ('08_ensembles', '448468c1')}

def test_every_cuda_cell_is_covered():
    found = set()
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] == 'code' and (re.search(r'^#\|\s*cuda\s*$', src, re.M) or 'if gpu_cell(' in src):
                found.add((nb.stem, c.get('id')))
    assert found == COVERED, f'cells not covered: {sorted(found - COVERED)}; listed but gone: {sorted(COVERED - found)}'

# ---------------------------------------------------------------------------------------------------- 01_scan
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('bshape,cshape', [('const', 'const'), ('var', 'var'), ('group', 'group')])
def test_01_scan_cell(device, bshape, cshape):
    "01_scan #87b3a437: make_inputs(l=300) on the device, `compare` for each backend (float32, rtol 1e-4, atol 1e-5)."
    from fbp_nb.scan import selective_scan, selective_scan_ref, has_triton, has_mamba_ssm, triton_interpreted
    gen = torch.Generator().manual_seed(0)
    b, d, l, n, g = 2, 4, 300, 3, 2
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    shp = dict(const=(d, n), var=(b, n, l), group=(b, g, n, l))
    x = dict(u=r(b, d, l), delta=0.5 * r(b, d, l), A=-torch.exp(0.5 * r(d, n)), B=r(*shp[bshape]), C=r(*shp[cshape]),
             D=r(d), z=r(b, d, l), delta_bias=0.1 * r(d))
    x = {k: v.float().to(device).requires_grad_() for k, v in x.items()}
    backends = ['sequential', 'chunked'] + (['triton'] if has_triton() and (device == 'cuda' or triton_interpreted()) else [])
    results = {}
    for be in backends + ['ref']:
        fn = selective_scan_ref if be == 'ref' else (lambda **k: selective_scan(**k, backend=be))
        y, h = fn(**x, delta_softplus=True, return_last_state=True)
        assert y.device.type == device and h.device.type == device
        gen1 = torch.Generator().manual_seed(1)
        gy, gh = torch.randn(y.shape, generator=gen1).to(device), torch.randn(h.shape, generator=gen1).to(device)
        results[be] = (y, h, torch.autograd.grad((y, h), list(x.values()), (gy, gh)))
    y2, h2, g2 = results.pop('ref')
    for be, (y1, h1, g1) in results.items():
        torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5, msg=lambda m: f'{be} output: {m}')
        torch.testing.assert_close(h1, h2, rtol=1e-4, atol=1e-5, msg=lambda m: f'{be} last state: {m}')
        for k, a, c in zip(x, g1, g2): torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5, msg=lambda m: f'{be} grad of {k}: {m}')
    if has_mamba_ssm() and device == 'cuda':
        torch.testing.assert_close(selective_scan(**x, delta_softplus=True, backend='cuda'),
                                   selective_scan(**x, delta_softplus=True, backend='sequential'), rtol=1e-3, atol=1e-3)

# ---------------------------------------------------------------------------------------------------- 04_metrics
@pytest.mark.parametrize('device', DEVICES)
def test_04_metrics_cell(device):
    "04_metrics #75a8e507: tensors on the device are accepted as they are."
    from fbp_nb.metrics import regression_metrics
    t = torch.rand(100, device=device) * 4 + 1
    assert math.isclose(regression_metrics(t, t + 0.1)['MAE'], 0.1, abs_tol=1e-5)

# ---------------------------------------------------------------------------------------------------- 05_learner
def tiny_cnn():
    "05_learner's tiny_cnn: four stride-2 conv-BN-ReLU blocks (64 -> 4 px), flatten, dropout, linear, sigmoid."
    def blk(ci, co): return nn.Sequential(nn.Conv2d(ci, co, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU())
    return nn.Sequential(blk(3, 16), blk(16, 32), blk(32, 64), blk(64, 64), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 16, 1), nn.Sigmoid())

@pytest.fixture(scope='module')
def faces():
    "05_learner's rendered synthetic faces (64 px, beauty transforms), 96 train / 40 val instead of 3000 / 200."
    from torch.utils.data import TensorDataset
    from fbp_nb.synth import SynthFaces
    from fbp_nb.data import beauty_transforms
    tfm = beauty_transforms(64, train=False)
    def as_tensors(split, n):
        ds = SynthFaces(n, img_size=64, split=split, seed=0)
        return TensorDataset(torch.stack([tfm(ds.render(i)) for i in range(n)]), torch.from_numpy(ds.scores))
    return as_tensors('train', 96), as_tensors('val', 40)

@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('amp_dtype', [torch.bfloat16, torch.float16])
def test_05_learner_amp_channels_last_cell(device, amp_dtype, faces, monkeypatch):
    """05_learner #15fdc0a6: AMP + channels_last training, 2 epochs, finite losses, predictions back on the CPU.
    The Learner refuses amp=True off CUDA, so on the CPU the test switches the same AMP path on after construction:
    autocast on the CPU in `amp_dtype` (bfloat16: what CPUs support natively; float16: the cell's dtype) and a CPU
    GradScaler. The forward's conv outputs are checked to be in `amp_dtype` and channels_last."""
    from fbp_nb.learner import Learner
    faces_tr, faces_va = faces
    torch.manual_seed(0)
    if device == 'cuda':
        g = Learner(tiny_cnn(), faces_tr, faces_va, lr=3e-3, progress=False, device='cuda')
        assert g.amp and g.channels_last and g.grad_scaler.is_enabled()
        amp_dtype = torch.float16
    else:
        g = Learner(tiny_cnn(), faces_tr, faces_va, lr=3e-3, progress=False, device='cpu', channels_last=True, batch_size=32)
        assert g.channels_last and not g.amp
        g.amp, g.grad_scaler = True, torch.amp.GradScaler('cpu', enabled=True)
        orig = torch.autocast
        monkeypatch.setattr(torch, 'autocast', lambda device_type, dtype=None, enabled=True, **kw: orig(device_type, dtype=amp_dtype, enabled=enabled, **kw))
    conv = g.model[0][0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    h = conv.register_forward_hook(lambda m, i, o: seen.append((o.dtype, o.is_contiguous(memory_format=torch.channels_last))))
    try: hist = g.fit(2)
    finally: h.remove()
    assert seen and all(s == (amp_dtype, True) for s in seen), seen[:3]
    assert len(hist) == 2 and all(math.isfinite(r['val_loss']) for r in hist)
    p = g.predict(faces_va)
    assert p.device.type == 'cpu' and p.shape == (40,) and torch.isfinite(p).all()

def test_05_learner_ddp_gloo(faces, tmp_path):
    "The Learner's DDP path (what `torchrun` starts on GPUs with NCCL), in one process over gloo on the CPU."
    import torch.distributed as dist
    from fbp_nb.learner import Learner
    faces_tr, faces_va = faces
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        g = Learner(tiny_cnn(), faces_tr, faces_va, lr=3e-3, progress=False, device='cpu', channels_last=True, batch_size=32)
        assert g.dist and g.is_main and isinstance(g.model, nn.parallel.DistributedDataParallel)
        assert isinstance(g.train_dl.sampler, torch.utils.data.DistributedSampler)
        hist = g.fit(1)
        assert math.isfinite(hist[-1]['val_loss']) and g.raw_model is g.model.module
        p = g.predict(faces_va)
        assert p.shape == (40,) and torch.isfinite(p).all()
    finally: dist.destroy_process_group()

# ---------------------------------------------------------------------------------------------------- 07_losses
@pytest.mark.parametrize('device', DEVICES)
def test_07_losses_cell(device):
    "07_losses #2ae8b114: each loss in float32/16/bf16 on the device matches float32 on the CPU, backward finite, and under autocast."
    from fbp_nb.losses import ParamSmoothL1Loss, HuberLoss, TukeyLoss
    LOSSES = dict(paramsmoothl1=ParamSmoothL1Loss, huber=HuberLoss, tukey=TukeyLoss)     # 07_losses' table
    torch.manual_seed(3)
    pc, tc = torch.randn(512, 1) * 2, torch.randn(512)
    amp_dtype = torch.float16 if device == 'cuda' else torch.bfloat16
    for name, cls in LOSSES.items():
        for p in (0.3, 1.0, 2.0):
            L = cls(p, scale=3.2)
            ref = L(pc, tc).item()
            for dt, tol in ((torch.float32, 1e-5), (torch.float16, 3e-3), (torch.bfloat16, 3e-2)):
                pd_ = pc.to(device, dt).clone().requires_grad_()
                out = L(pd_, tc.to(device, dt))
                assert out.device.type == device and out.dtype == dt
                assert math.isclose(out.item(), ref, abs_tol=tol * max(1, abs(ref)), rel_tol=0), (name, p, dt, out.item(), ref)
                out.backward(); assert pd_.grad.device.type == device and torch.isfinite(pd_.grad).all()
            with torch.autocast(device, dtype=amp_dtype):
                assert math.isclose(L(pc.to(device), tc.to(device)).item(), ref, abs_tol=1e-5 * max(1, abs(ref)), rel_tol=0)

# ---------------------------------------------------------------------------------------------------- 08_ensembles
@pytest.fixture(scope='module')
def fake_scut(tmp_path_factory):
    from fbp_nb.data import fake_scut_fbp5500
    return fake_scut_fbp5500(tmp_path_factory.mktemp('scut'), n_per_group=5, size=48)   # 20 images, 12/8 and 5 folds of 4

@pytest.mark.parametrize('device', DEVICES)
def test_08_dynamic_er_cnn_recipe_cell(device, fake_scut, tmp_path):
    """08_ensembles #daa0b071: the Dynamic ER-CNN recipe on SCUT-FBP5500 60/40, then the members' ensemble on the device.
    Here on a fake SCUT-FBP5500, 1 epoch, at 75 px (the smallest input Inception-v3 takes) instead of 224/299, with
    one member per architecture (Inception-v3 + Tukey, ResNeXt-50 + ParamSmoothL1, 2B-IncRex + Huber: ~60 s on 2
    cores); FBP_SLOW_TESTS=1 trains all five (~110 s). PC is NaN for a member whose 1-epoch predictions are constant."""
    import os
    from fbp_nb.train import RunConfig
    from fbp_nb.ensemble import DYNAMIC_ER_CNN, train_recipe, ensemble_from_runs
    rows = DYNAMIC_ER_CNN if os.environ.get('FBP_SLOW_TESTS') == '1' else [DYNAMIC_ER_CNN[i] for i in (0, 1, 3)]
    recipe = [(name, {**kw, 'img_size': 75}) for name, kw in rows]
    members = [name for name, _ in rows]
    base = RunConfig(data='scut', root=str(fake_scut), protocol='60-40', epochs=1, batch_size=15, lr=1e-4, cache='memory', device=device,
                     val_frac=0.25)                                # 20 images: keep a non-empty validation split
    runs = train_recipe(recipe, base, tmp_path / 'dynamic_er_cnn', log=lambda *a: None)
    assert [r.name for r in runs] == members
    df, met = ensemble_from_runs(runs, device=device)
    assert list(met.index) == members + ['ensemble'] and int(met.loc['ensemble', 'n']) == 8
    np.testing.assert_allclose(df['ensemble'].values, df[members].values.mean(1), atol=1e-12)
    assert np.isfinite(df[members].values).all() and np.isfinite(met[['MAE', 'RMSE']].values.astype(float)).all()

@pytest.mark.parametrize('device', DEVICES)
def test_08_dynamic_er_cnn_per_fold_cell(device, fake_scut, tmp_path):
    """08_ensembles #448468c1: the recipe trained per fold (5 folds), each fold's ensemble row, and the table with its
    mean and std rows. Same loop; a 2-member light recipe (Mamba-CNN A and D, 32 px) instead of the five large nets."""
    from fbp_nb.train import RunConfig
    from fbp_nb.ensemble import train_recipe, ensemble_from_runs
    light = [('mamba_A', dict(model='mamba_cnn_A', img_size=32, model_kwargs={'width_mult': 0.25}, arch='compact')),
             ('mamba_D', dict(model='mamba_cnn_D', img_size=32, model_kwargs={'width_mult': 0.25}, arch='compact'))]
    per_fold = {}
    for k in range(1, 6):
        fold_base = RunConfig(data='scut', root=str(fake_scut), protocol=str(k), epochs=1, batch_size=15, lr=1e-4, cache='memory', device=device,
                              val_frac=0.25)
        fold_runs = train_recipe(light, fold_base, tmp_path / 'kfold' / f'fold{k}', log=lambda *a: None)
        per_fold[f'fold{k}'] = ensemble_from_runs(fold_runs, device=device)[1].loc['ensemble']
    der_kfold = pd.DataFrame(per_fold).T.astype(float)
    der_kfold.loc['mean'] = der_kfold.mean(); der_kfold.loc['std'] = der_kfold.iloc[:5].std(ddof=1)
    assert list(der_kfold.index) == [f'fold{k}' for k in range(1, 6)] + ['mean', 'std']
    assert (der_kfold.loc[[f'fold{k}' for k in range(1, 6)], 'n'] == 4).all()
    assert np.isfinite(der_kfold[['MAE', 'RMSE']].values).all()
