"YOLOX (fbp_nb.models.yolox) and detection runs (fbp_nb.detect): strides, SimOTA and loss against the official yolox package, API, run folder."
import json
import pytest
import torch
import torchvision
from torch import nn
from fbp_nb.models import create_model, list_models, model_info
from fbp_nb.models.yolox import (YOLOX, PRESETS, make_grid, center_prior, simota_assign, yolox_loss, postprocess,
                                 decode_outputs)
from fbp_nb.det_data import DetAugment
from fbp_nb.learner import ModelEMA

C = 7
SHAPES, STRIDES = [(40, 40), (20, 20), (10, 10)], (8, 16, 32)


def _random_case(seed=0, b=3, ks=(3, 1, 0)):
    "Decoded predictions (b, A, 5 + C) with grad, targets (xyxy) and the same as YOLOX's padded (cls, cx, cy, w, h) labels."
    g = torch.Generator().manual_seed(seed)
    grid, st = make_grid(SHAPES, STRIDES)
    raw = torch.randn(b, len(st), 5 + C, generator=g) * 0.5
    pred = torch.cat([(raw[..., :2] + grid) * st[:, None], raw[..., 2:4].exp() * st[:, None] * 4, raw[..., 4:]], -1).requires_grad_()
    targets, labels = [], torch.zeros(b, max(ks), 5)
    for i, k in enumerate(ks):
        xy = torch.rand(k, 2, generator=g) * 200 + 20; wh = torch.rand(k, 2, generator=g) * 100 + 10
        targets.append(dict(boxes=torch.cat([xy, xy + wh], 1), labels=torch.randint(0, C, (k,), generator=g)))
        labels[i, :k, 0] = targets[-1]['labels'].float()
        labels[i, :k, 1:] = torchvision.ops.box_convert(targets[-1]['boxes'], 'xyxy', 'cxcywh')
    return pred, targets, labels, grid, st


def _ref_shifts(grid):
    xs, ys, ss, o = [], [], [], 0
    for (h, w), s in zip(SHAPES, STRIDES):
        xs.append(grid[o:o + h * w, 0][None]); ys.append(grid[o:o + h * w, 1][None]); ss.append(torch.full((1, h * w), float(s))); o += h * w
    return xs, ys, ss


@pytest.mark.parametrize('preset', list(PRESETS))
@pytest.mark.parametrize('hw', [(320, 320), (256, 320), (320, 192)])
def test_level_strides_match_what_the_loss_assumes(preset, hw):
    m = create_model(f'yolox_{preset}', num_classes=C).eval()
    H, W = hw
    maps = m.head(m.backbone(torch.zeros(1, 3, H, W)))
    assert [tuple(x.shape[-2:]) for x in maps] == [(H // s, W // s) for s in m.strides] and tuple(m.strides) == STRIDES
    pred, grid, st = m.raw(torch.zeros(1, 3, H, W))
    # the anchor centres of each level tile the whole input at that level's stride
    for s in STRIDES:
        c = (grid[st == s] + 0.5) * s
        assert c[:, 0].max() == W - s / 2 and c[:, 1].max() == H - s / 2 and int((st == s).sum()) == (H // s) * (W // s)


def test_a_wrong_level_stride_is_caught():
    m = create_model('yolox_nano', num_classes=C)
    m.strides = (16, 16, 32)          # the published FER-YOLO-Mamba bug: P3 at stride 16 while the loss assumes 8
    with pytest.raises(RuntimeError, match='stride 16'):
        m.raw(torch.zeros(1, 3, 320, 320))
    with pytest.raises(ValueError, match='multiples of 32'):
        create_model('yolox_nano').raw(torch.zeros(1, 3, 300, 320))


def test_simota_hand_case():
    grid, st = make_grid(SHAPES, STRIDES)
    ctr = (grid + 0.5) * st[:, None]
    gt = torch.tensor([[100., 100., 64., 64.]])
    cand, good = center_prior(gt, grid, st)
    pred = torch.zeros(len(st), 5 + C)
    pred[:, :4] = torch.cat([ctr, torch.full_like(ctr, 16.)], 1)
    pred[:, 4:] = -4.
    best = cand.nonzero().squeeze(1)[good[0]][:3]
    pred[best, :4] = gt
    fg, gi, piou = simota_assign(pred, gt, torch.tensor([2]), grid, st, C)
    assert fg.nonzero().squeeze(1).tolist() == sorted(best.tolist()) and gi.tolist() == [0, 0, 0]
    assert torch.allclose(piou, torch.ones(3))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_simota_and_loss_match_official_yolox(seed):
    yh = pytest.importorskip('yolox.models.yolo_head', reason='official yolox package not installed (pip install --no-deps yolox loguru thop)')
    head = yh.YOLOXHead(C, 0.25)
    pred, targets, labels, grid, st = _random_case(seed)
    xs, ys, ss = _ref_shifts(grid)
    ref = head.get_losses(None, xs, ys, ss, labels, pred, None, torch.float32)
    mine = yolox_loss(pred, targets, grid, st, C)
    for r, k in zip(ref[:4], ('loss', 'iou', 'obj', 'cls')):
        assert abs(float(r) - float(mine[k])) <= 1e-4 * max(1., abs(float(r))), (k, float(r), float(mine[k]))
    g_ref, = torch.autograd.grad(ref[0], pred, retain_graph=True)
    g, = torch.autograd.grad(mine['loss'], pred)
    assert torch.allclose(g, g_ref, atol=1e-6)
    # the assignment itself, image by image
    p = pred.detach()
    for i, t in enumerate(targets):
        k = len(t['labels'])
        if k == 0: continue
        r = head.get_assignments(i, k, len(st), labels[i, :k, 1:], labels[i, :k, 0], p[i, :, :4], torch.cat(ss, 1), torch.cat(xs, 1),
                                 torch.cat(ys, 1), p[..., 5:], p[..., :4], p[..., 4:5], labels, None)
        fg, gi, piou = simota_assign(p[i], labels[i, :k, 1:], t['labels'], grid, st, C)
        assert torch.equal(r[1], fg) and torch.equal(r[3], gi) and torch.allclose(r[2], piou, atol=1e-6)


def test_same_outputs_as_official_yolox_with_the_same_weights():
    ym = pytest.importorskip('yolox.models', reason='official yolox package not installed')
    for name, (d, w, dw) in PRESETS.items():
        ref = ym.YOLOX(ym.YOLOPAFPN(d, w, depthwise=dw), ym.YOLOXHead(C, w, depthwise=dw)).eval()
        for mod in ref.modules():
            if isinstance(mod, nn.BatchNorm2d): mod.eps = 1e-3
        ours = create_model(f'yolox_{name}', num_classes=C).eval()
        ours.load_state_dict(ref.state_dict())
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
        x = torch.rand(1, 3, 256, 320)
        with torch.no_grad(): r = ref(x); o, _, _ = ours.raw(x)
        assert torch.allclose(torch.cat([o[..., :4], o[..., 4:].sigmoid()], -1), r, atol=1e-3)


def test_registry_and_forward_contract():
    assert {'yolox_nano', 'yolox_tiny', 'yolox_s'} <= set(list_models(task='detection'))
    assert model_info('yolox_nano').task == 'detection'
    m = create_model('yolox_nano', num_classes=3)
    assert m.model_config == {'name': 'yolox_nano', 'kwargs': {'num_classes': 3}} and m.num_classes == 3
    x = torch.rand(2, 3, 128, 160)
    t = [dict(boxes=torch.tensor([[10., 10., 60., 70.]]), labels=torch.tensor([2])), dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    L = m.train()(x, t)
    assert set(L) == {'loss', 'iou', 'obj', 'cls', 'n_fg'} and L['loss'].requires_grad and torch.isfinite(L['loss'])
    L['loss'].backward()
    assert all(p.grad is not None for p in m.parameters())
    assert m(x).shape == (2, 16 * 20 + 8 * 10 + 4 * 5, 5 + 3)      # training mode without targets: decoded predictions
    m.eval(); m.conf = 0.
    out = m(x)
    assert len(out) == 2 and all(set(o) == {'boxes', 'scores', 'labels'} and o['boxes'].shape[1:] == (4,) and len(o['boxes']) <= 100 for o in out)
    assert all(((o['boxes'][:, 2:] >= o['boxes'][:, :2]).all()) and ((o['labels'] >= 0) & (o['labels'] < 3)).all() for o in out)
    w = create_model('yolox_nano', num_classes=7, width=0.125)
    assert w.model_config['kwargs'] == {'num_classes': 7, 'width': 0.125} and sum(p.numel() for p in w.parameters()) < 0.4e6


def test_postprocess_is_classwise_nms():
    torch.manual_seed(0)
    p = torch.randn(2, 300, 5 + C)
    p[..., :2] = torch.rand(2, 300, 2) * 100; p[..., 2:4] = torch.rand(2, 300, 2) * 30 + 5
    for d, q in zip(postprocess(p, conf=0.05, nms_iou=0.5, max_det=1000), p):
        s, lab = (q[:, 5:].sigmoid() * q[:, 4:5].sigmoid()).max(1)
        k = s >= 0.05
        b = torchvision.ops.box_convert(q[k, :4], 'cxcywh', 'xyxy')
        ref = []
        for c in lab[k].unique():      # NMS class by class, by hand with torchvision.ops.nms
            i = (lab[k] == c).nonzero().squeeze(1)
            ref += [(round(float(s[k][j]), 6), int(c)) for j in i[torchvision.ops.nms(b[i], s[k][i], 0.5)]]
        assert sorted(ref, reverse=True) == sorted(zip([round(v, 6) for v in d['scores'].tolist()], d['labels'].tolist()), reverse=True)


def test_augmentation_moves_boxes_with_the_image():
    img = torch.zeros(3, 64, 96)
    img[:, 10:30, 20:50] = 1.                                   # a white box exactly where the target says
    t = dict(boxes=torch.tensor([[20., 10., 50., 30.]]), labels=torch.tensor([4]))
    torch.manual_seed(0)
    for _ in range(5):
        a, at = DetAugment(hsv=(0, 0, 0), min_size=1.)(img, t)
        if len(at['boxes']) == 0: continue
        x1, y1, x2, y2 = at['boxes'][0].round().long().tolist()
        inside = a[0, y1 + 1:y2 - 1, x1 + 1:x2 - 1]
        assert inside.numel() == 0 or inside.mean() > 0.9       # the box still covers the white patch
        assert at['labels'].tolist() == [4]


def test_ema_tracks_the_weights():
    net = nn.Linear(4, 2)
    ema = ModelEMA(net, decay=0.5, tau=1e-9)                     # decay 0.5 from the first update
    w = [net.weight.detach().clone()]
    for _ in range(3):
        with torch.no_grad(): net.weight.add_(1.)
        ema.update(net); w.append(net.weight.detach().clone())
    expect = w[0]
    for v in w[1:]: expect = 0.5 * expect + 0.5 * v
    assert torch.allclose(ema.module.weight, expect)


def test_detection_run_folder_evaluate_predict(tmp_path, capsys):
    from fbp_nb.detect import evaluate_detector, predict_boxes
    from fbp_nb.train import read_run, run, config_for, RunConfig
    from fbp_nb.synth import SynthFER
    cfg = config_for('yolox_nano', n_train=8, n_val=4, n_test=4, img_size=64, epochs=1, batch_size=4, out=str(tmp_path / 'r'))
    r = run(cfg, progress=False)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"mAP50={r.test['mAP50']:.3f} mAP={r.test['mAP']:.3f}"
    assert {'model.pt', 'last.pt', 'config.json', 'metrics.json', 'history.json', 'history.csv'} <= {p.name for p in (tmp_path / 'r').iterdir()}
    ck = read_run(tmp_path / 'r' / 'model.pt')
    assert ck['config']['task'] == 'detection' and ck['config']['model'] == {'name': 'yolox_nano', 'kwargs': {'num_classes': 7}}
    m = evaluate_detector(tmp_path / 'r' / 'model.pt', 'test', verbose=False)
    assert abs(m['mAP50'] - r.test['mAP50']) < 1e-9 and len(m['per_class']) == 7
    img = tmp_path / 'x.png'
    SynthFER(n=1, img_size=96, split='test').load_image(0).save(img)
    rows = predict_boxes(tmp_path / 'r', [img], tmp_path / 'pred', conf=0.)
    assert (tmp_path / 'pred' / 'x_boxes.png').is_file() and all(len(row) == 7 and row[0] == str(img) for row in rows)
    with pytest.raises(ValueError, match="not a data set of the regression model 'mamba_cnn_D'"):
        cfg.replace(model='mamba_cnn_D')
    with pytest.raises(ValueError, match='root'):
        cfg.replace(data='fer')
    with pytest.raises(ValueError, match='img_size'):
        run(RunConfig(model='yolox_nano', img_size=100))


# ---- yolox_mnv2: the detector on a MobileNetV2 trunk (ImageNet file optional) ----
import os
from pathlib import Path
_W = Path(os.environ.get('FBP_WEIGHTS', Path(__file__).resolve().parents[2] / 'shared' / 'weights' / 'mobilenet_v2_imagenet.pth'))
if _W.is_dir(): _W = _W / 'mobilenet_v2_imagenet.pth'


def test_mnv2_detector_contract_and_strides():
    m = create_model('yolox_mnv2', num_classes=C)
    assert model_info('yolox_mnv2').task == 'detection' and m.pretrained_keys == set()
    assert m.backbone.backbone.channels == (32, 96, 320)
    for hw in ((320, 320), (256, 192)):
        pred, grid, st = m.eval().raw(torch.rand(1, 3, *hw))
        assert pred.shape == (1, sum((hw[0] // s) * (hw[1] // s) for s in STRIDES), 5 + C)
    x = torch.rand(2, 3, 128, 128)
    t = [dict(boxes=torch.tensor([[10., 10., 60., 70.]]), labels=torch.tensor([2])), dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    L = m.train()(x, t); L['loss'].backward()
    assert torch.isfinite(L['loss']) and all(p.grad is not None for p in m.parameters())
    assert m.model_config['name'] == 'yolox_mnv2' and create_model('yolox_mnv2', **m.model_config['kwargs']).state_dict().keys() == m.state_dict().keys()


def test_mnv2_detector_refuses_named_weights_offline(tmp_path):
    with pytest.raises(ValueError, match='no published weights'): create_model('yolox_mnv2', pretrained='IMAGENET1K_V1')
    with pytest.raises(FileNotFoundError, match='not found'): create_model('yolox_mnv2', pretrained=str(tmp_path / 'nope.pth'))
    bad = tmp_path / 'other.pth'; torch.save({'w': torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match=r'other.pth \(neither an ImageNet .* does not fit YOLOX'): create_model('yolox_mnv2', pretrained=str(bad))


@pytest.mark.skipif(not _W.is_file(), reason=f"ImageNet MobileNetV2 file not found at {_W} (set FBP_WEIGHTS)")
def test_mnv2_detector_from_the_imagenet_file(tmp_path):
    from torchvision.models import mobilenet_v2
    from fbp_nb.train import param_groups
    from fbp_nb.detect import detection_learner, detection_splits
    from fbp_nb.train import config_for
    m = create_model('yolox_mnv2', pretrained=str(_W), num_classes=C)
    ref = mobilenet_v2(weights=None); ref.load_state_dict(torch.load(_W, map_location='cpu', weights_only=True)); ref.eval()
    x = torch.rand(2, 3, 96, 96)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    m.train()                                                        # trunk BN keeps the file's (folded) statistics in train mode
    with torch.no_grad(): c5, want = m.backbone.backbone(x)[2], ref.features[:18]((x - mean) / std)
    torch.testing.assert_close(c5, want, atol=1e-4, rtol=1e-4)
    n_trunk = len(m.backbone.backbone.state_dict())
    assert len(m.pretrained_keys) == n_trunk and all(k.startswith('backbone.backbone.features.') for k in m.pretrained_keys)
    # the detection Learner puts the trunk at lr, everything fresh at lr * fresh_lr_mult
    cfg = config_for('yolox_mnv2', weights=str(_W), lr=1e-4, fresh_lr_mult=10., n_train=4, n_val=2, n_test=2, img_size=64, epochs=1, out=str(tmp_path / 'r'))
    learn = detection_learner(m, detection_splits(cfg), cfg, progress=False)
    lrs = sorted((g['lr'], sum(p.numel() for p in g['params'])) for g in learn.opt.param_groups)
    n_pre = sum(p.numel() for n, p in m.named_parameters() if n in m.pretrained_keys)
    assert [l for l, _ in lrs] == pytest.approx([1e-4, 1e-3]) and lrs[0][1] == n_pre
    # a run's weights load back into the same model (not as an ImageNet file)
    sd = tmp_path / 'det.pt'; torch.save(m.state_dict(), sd)
    back = create_model('yolox_mnv2', pretrained=str(sd), num_classes=C)
    assert back.pretrained_keys == set() and all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), m.state_dict().values()))
