"""Detection benchmarks (not collected by pytest). Run each part under the CPU lock, one command per part:

    # the default SynthFER run (acceptance: <= 5 min on 2 cores, test mAP@0.5 >= 0.6) -> results/det_default_run.json
    flock /tmp/cpu.lock nice -n 5 python tests/benchmarks/det_table.py default --cli     # fbp_train --model yolox_nano --data synth_fer
    OMP_NUM_THREADS=1 python tests/benchmarks/det_table.py default --changes '{"seed": 1}' --save det_seed1.json   # tuning, other seeds
    # the real set: train on train (selection on a 10 % part of it), report on valid; one model per command
    flock /tmp/cpu.lock nice -n 5 python tests/benchmarks/det_table.py real --model yolox_nano --epochs 10
    flock /tmp/cpu.lock nice -n 5 python tests/benchmarks/det_table.py real --model yolov8n --epochs 10   # Ultralytics peer
    python tests/benchmarks/det_table.py table                      # print the table of results/det_table.json

The Ultralytics peer (an optional benchmark dependency: `pip install ultralytics`) is built from its yaml (no pretrained
weights) and trained with its own recipe for the same number of epochs at the same image size, without validation during
training (its last epoch is kept: a fixed budget); both models are scored by `fbp_nb.metrics.detection_metrics` on the
valid split (boxes in original pixels), and Ultralytics' own `val()` numbers are kept next to ours.
"""
import argparse, json, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch

RES = Path(__file__).parent / 'results'
ROOT = Path(os.environ.get('FBP_DATA_ROOT', Path(__file__).resolve().parents[3] / 'shared' / 'data')) / 'facial-emotion-detection'


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _update(path: Path, key: str, value):
    d = json.loads(path.read_text()) if path.exists() else {}
    d[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d, indent=1, default=float))


def default_run(args):
    """The default SynthFER run. --cli: exactly the acceptance command, `fbp_train --model yolox_nano --data synth_fer`, in a
    subprocess (its wall time includes start-up and the progress bar); else in this process through `run`."""
    from fbp_nb.train import run, config_for
    out_dir = Path(tempfile.mkdtemp()) / 'default'
    if args.cli:
        if args.changes != '{}': sys.exit('--cli runs the default command as written: no --changes')
        exe = shutil.which('fbp_train', path=os.path.dirname(sys.executable)) or shutil.which('fbp_train')
        t0 = time.time()
        p = subprocess.run([exe, '--model', 'yolox_nano', '--data', 'synth_fer', '--out', str(out_dir)], capture_output=True, text=True)
        wall = time.time() - t0
        if p.returncode: sys.exit(f"fbp_train failed ({p.returncode}):\n{p.stderr[-3000:]}")
        met = json.loads((out_dir / 'metrics.json').read_text())
        hist = json.loads((out_dir / 'history.json').read_text())
        from fbp_nb.train import stored_config
        res = dict(config=stored_config(met['config']).to_dict(), fit_seconds=met['fit_seconds'], test=met['test'], per_class=met['per_class'],
                   history=hist, best_val=met['best_val'], last_line=p.stdout.strip().splitlines()[-1])
        command = 'python tests/benchmarks/det_table.py default --cli   # runs: fbp_train --model yolox_nano --data synth_fer'
    else:
        cfg = config_for('yolox_nano', out=str(out_dir), **json.loads(args.changes))
        t0 = time.time()
        r = run(cfg, progress=False)
        wall = time.time() - t0
        res = dict(config=r.config.to_dict(), fit_seconds=round(r.seconds, 1), test=r.test, per_class=r.table.to_dict('records'),
                   history=r.history, best_val=r.best_val)
        command = 'python tests/benchmarks/det_table.py default' + (f" --changes '{args.changes}'" if args.changes != '{}' else '')
    out = dict(command=command, machine=machine(), wall_seconds=round(wall, 1), **res)
    name = args.save or 'det_default_run.json'
    if (RES / name).exists():                             # the tuning record of earlier runs stays
        old = json.loads((RES / name).read_text())
        out.update({k: old[k] for k in ('tuning', 'selection', 'seeds') if k in old})
    (RES / name).write_text(json.dumps(out, indent=1, default=float))
    print(f"wall {wall:.0f} s (fit {res['fit_seconds']:.0f} s), test mAP50 {res['test']['mAP50']:.4f}; saved {RES / name}")


def _gflops(model, size):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.no_grad(): model(torch.zeros(1, 3, size, size))
    return fc.get_total_flops() / 1e9


def _score(preds, ds):
    from fbp_nb.metrics import detection_metrics, pr_curve
    targets = [{k: torch.as_tensor(v) for k, v in ds.raw(i)[1].items()} for i in range(len(ds))]
    m = detection_metrics(preds, targets, len(ds.class_names), class_names=list(ds.class_names))
    m['pr'] = {}                                          # per-class PR curves at IoU 0.5 (VOC matching), <= 200 points each
    for c, name in enumerate(ds.class_names):
        r = pr_curve(preds, targets, c)
        k = np.unique(np.linspace(0, len(r['recall']) - 1, min(200, len(r['recall']))).round().astype(int)) if len(r['recall']) else []
        m['pr'][name] = dict(recall=[round(float(r['recall'][j]), 4) for j in k], precision=[round(float(r['precision'][j]), 4) for j in k])
    return m


def real_yolox(args, valid):
    from fbp_nb.detect import load_detector
    from fbp_nb.train import run, config_for
    from fbp_nb.det_data import letterbox, to_tensor01, unletterbox_boxes
    cfg = config_for(args.model, data='fer', root=str(args.root), img_size=args.img_size, epochs=args.epochs,
                           batch_size=args.batch, seed=args.seed, val_frac=0.1, out=str(Path(tempfile.mkdtemp()) / args.model),
                           model_kwargs=json.loads(args.model_kwargs), weights=args.weights, fresh_lr_mult=args.fresh_lr_mult,
                           cls_weight=args.cls_weight, **({} if args.lr is None else dict(lr=args.lr)))
    r = run(cfg, progress=False)
    model, _ = load_detector(r.out / 'model.pt', 'cpu')
    preds, t_inf = [], 0.
    for i in range(len(valid)):          # predictions in original pixels, as a user gets them
        img, _ = valid.raw(i)
        lb, _, s, pad = letterbox(img, None, args.img_size)
        t0 = time.time()
        with torch.no_grad(): d = model(to_tensor01(lb)[None])[0]
        t_inf += time.time() - t0
        preds.append(dict(boxes=unletterbox_boxes(d['boxes'], s, pad, img.size), scores=d['scores'], labels=d['labels']))
    m = _score(preds, valid)
    return dict(params_M=sum(p.numel() for p in model.parameters()) / 1e6, gflops=_gflops(lambda x: model.raw(x), args.img_size),
                fit_seconds=r.seconds, ms_per_image=1000 * t_inf / len(valid), selected_epoch=r.best_val['epoch'],
                val_part_mAP50=r.best_val['val_mAP50'], **{k: m[k] for k in ('mAP50', 'mAP50_coco', 'mAP')},
                per_class=m['per_class'][['name', 'n_gt', 'P', 'R', 'F1', 'AP50', 'AP']].to_dict('records'), pr=m['pr'])


def real_ultralytics(args, valid):
    try: from ultralytics import YOLO
    except ImportError as e: sys.exit(f"skipped: ultralytics is not installed ({e}); pip install ultralytics")
    work = Path(tempfile.mkdtemp())
    for s in ('train', 'valid'):         # a copy (43 MB) in a temporary folder: Ultralytics writes label caches next to the labels
        shutil.copytree(Path(args.root) / s, work / s)
    names = list(valid.class_names)
    (work / 'data.yaml').write_text(f"path: {work}\ntrain: train/images\nval: valid/images\nnames: {names}\n")
    model = YOLO(f'{args.model}.yaml')
    t0 = time.time()
    model.train(data=str(work / 'data.yaml'), epochs=args.epochs, imgsz=args.img_size, batch=args.batch, device='cpu', workers=0,
                pretrained=False, val=False, plots=False, amp=False, seed=args.seed, fraction=args.fraction, project=str(work / 'runs'), name='train', verbose=False)
    fit = time.time() - t0
    net = YOLO(str(work / 'runs' / 'train' / 'weights' / 'last.pt'))
    preds, t_inf = [], 0.
    for i in range(len(valid)):
        t1 = time.time()
        res = net.predict(str(valid.files[i]), imgsz=args.img_size, conf=0.001, iou=0.65, max_det=100, device='cpu', verbose=False)[0]
        t_inf += time.time() - t1
        b = res.boxes
        preds.append(dict(boxes=b.xyxy.cpu(), scores=b.conf.cpu(), labels=b.cls.cpu().long()))
    m = _score(preds, valid)
    own = net.val(data=str(work / 'data.yaml'), imgsz=args.img_size, batch=args.batch, device='cpu', plots=False, verbose=False, split='val')
    inner = net.model
    shutil.rmtree(work, ignore_errors=True)
    return dict(params_M=sum(p.numel() for p in inner.parameters()) / 1e6, gflops=_gflops(lambda x: inner.eval()(x), args.img_size),
                fit_seconds=fit, ms_per_image=1000 * t_inf / len(valid), selected_epoch=args.epochs - 1, val_part_mAP50=None,
                **{k: m[k] for k in ('mAP50', 'mAP50_coco', 'mAP')}, ultralytics_val=dict(mAP50=float(own.box.map50), mAP=float(own.box.map)),
                per_class=m['per_class'][['name', 'n_gt', 'P', 'R', 'F1', 'AP50', 'AP']].to_dict('records'), pr=m['pr'])


def real(args):
    from fbp_nb.det_data import YOLODetection
    if not Path(args.root).is_dir(): sys.exit(f"skipped: {args.root} not found (set FBP_DATA_ROOT or pass --root)")
    torch.manual_seed(args.seed)
    valid = YOLODetection(args.root, 'valid', img_size=args.img_size)
    res = (real_ultralytics if args.model.startswith('yolov') else real_yolox)(args, valid)
    res.update(model=args.model, epochs=args.epochs, img_size=args.img_size, batch=args.batch, seed=args.seed, machine=machine(),
               model_kwargs=json.loads(args.model_kwargs), weights=args.weights, lr=args.lr, fresh_lr_mult=args.fresh_lr_mult, tag=args.tag,
               **({} if args.model.startswith('yolov') else dict(cls_weight=args.cls_weight)),
               command="OMP_NUM_THREADS=1 python tests/benchmarks/det_table.py real " + ' '.join(sys.argv[2:]))
    if args.fraction != 1.0: print(json.dumps({k: v for k, v in res.items() if k != 'per_class'}, default=float)); return   # smoke test: not saved
    _update(RES / 'det_table.json', f"{args.model}{'-' + args.tag if args.tag else ''}_e{args.epochs}_s{args.img_size}_seed{args.seed}", res)
    table(args)


def table(args):
    p = RES / 'det_table.json'
    if not p.exists(): sys.exit(f"no results yet at {p}")
    d = json.loads(p.read_text())
    print(f"facial-emotion-detection: train on train, report on valid (185 images); scored by fbp_nb.metrics.detection_metrics\n")
    print(f"{'run':34s} {'params M':>8s} {'GFLOPs':>7s} {'fit s':>7s} {'ms/img':>7s} {'mAP50':>6s} {'mAP':>6s}")
    for k, r in d.items():
        print(f"{k:34s} {r['params_M']:8.2f} {r['gflops']:7.2f} {r['fit_seconds']:7.0f} {r['ms_per_image']:7.1f} {r['mAP50']:6.3f} {r['mAP']:6.3f}"
              + (f"   (Ultralytics' own val: mAP50 {r['ultralytics_val']['mAP50']:.3f}, mAP {r['ultralytics_val']['mAP']:.3f})" if r.get('ultralytics_val') else ''))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='what', required=True)
    a = sub.add_parser('default'); a.add_argument('--changes', default='{}', help='JSON of RunConfig changes (tuning)'); a.add_argument('--save', default=None)
    a.add_argument('--cli', action='store_true', help='run the acceptance command itself (fbp_train --model yolox_nano --data synth_fer) in a subprocess')
    b = sub.add_parser('real')
    b.add_argument('--model', default='yolox_nano'); b.add_argument('--epochs', type=int, default=10); b.add_argument('--img-size', type=int, default=320)
    b.add_argument('--batch', type=int, default=16); b.add_argument('--seed', type=int, default=0); b.add_argument('--root', default=str(ROOT))
    b.add_argument('--model-kwargs', default='{}', help='JSON of model keywords (e.g. the Table III switches)')
    b.add_argument('--weights', default=None, help='weights file for create_model (e.g. the ImageNet MobileNetV2 file for yolox_mnv2)')
    b.add_argument('--lr', type=float, default=None); b.add_argument('--fresh-lr-mult', type=float, default=1.0)
    b.add_argument('--cls-weight', type=float, default=1.0, help="weight of the loss's class term (default 1: YOLOX's loss, as the table's rows were trained)")
    b.add_argument('--tag', default='', help='row name suffix (ablations, pretrained)')
    b.add_argument('--fraction', type=float, default=1.0, help='Ultralytics: fraction of train used (smoke tests only)')
    sub.add_parser('table')
    args = ap.parse_args()
    {'default': default_run, 'real': real, 'table': table}[args.what](args)
