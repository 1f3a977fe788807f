"""Detectors through the run API and the commands of regression (issue 11, "Training and use"): `run` follows the model's
task, `RunConfig.validate` refuses mixed tasks, and `fbp_train` / `fbp_eval` / `fbp_predict` train, score and run a detector."""
import contextlib, io, json, os, re, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from fbp_nb.cli import train_main, eval_main, predict_main
from fbp_nb.train import RunConfig, run, read_run, stored_config
from fbp_nb.synth import SynthFER

LAST = re.compile(r'mAP50=(\d\.\d{3}) mAP=(\d\.\d{3})')
BOX = re.compile(r'(?P<path>[^\t]+)\t(?P<cls>\w+)\t(?P<score>\d\.\d{3})\t(?P<box>-?\d+\.\d(,-?\d+\.\d){3})')
TINY = ['--model', 'yolox_nano', '--n-train', '32', '--n-val', '8', '--n-test', '8', '--img-size', '64', '--batch-size', '8',
        '--device', 'cpu', '--no-progress']

def call(main, argv):
    "(exit code, stdout, stderr) of a console entry point called in this process."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(argv)
    return rc, out.getvalue(), err.getvalue()

def script(name, *args, timeout=300, cwd=None):
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    assert exe, f'the `{name}` console script is not installed: pip install -e ".[dev]"'
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)

@pytest.fixture(scope='module')
def det_run(tmp_path_factory):
    "One tiny detection run through fbp_train (2 epochs, 32 SynthFER scenes at 64 px: seconds), shared by the tests below."
    out = tmp_path_factory.mktemp('det') / 'run'
    rc, stdout, stderr = call(train_main, TINY + ['--epochs', '2', '--out', str(out)])
    assert rc == 0, stderr
    return out, stdout.strip().splitlines()

def yolo_folder(root:Path, n_train=12, n_valid=4, size=96) -> Path:
    "A YOLO-format folder (train/valid images + labels, data.yaml) written from SynthFER scenes."
    names = list(SynthFER(n=1, img_size=32).class_names)
    for split, n in (('train', n_train), ('valid', n_valid)):
        ds = SynthFER(n=n, img_size=size, seed=3, split='train' if split == 'train' else 'test')
        (root / split / 'images').mkdir(parents=True); (root / split / 'labels').mkdir(parents=True)
        for i in range(n):
            img, t = ds.raw(i)
            img.save(root / split / 'images' / f'{split}{i}.jpg')
            w, h = img.size
            lines = [f"{int(l)} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} {(b[2] - b[0]) / w:.6f} {(b[3] - b[1]) / h:.6f}"
                     for b, l in zip(np.asarray(t['boxes']), np.asarray(t['labels']))]
            (root / split / 'labels' / f'{split}{i}.txt').write_text('\n'.join(lines) + '\n')
    (root / 'data.yaml').write_text(f"train: train/images\nval: valid/images\nnc: {len(names)}\nnames: {names}\n")
    return root

# --- the registry and the run API ---------------------------------------------------------------------------------

def test_detectors_in_the_registry_without_importing_their_module():
    code = ("import sys; from fbp_nb.models import create_model, list_models\n"
            "assert 'fbp_nb.models.yolox' not in sys.modules\n"
            "m = create_model('yolox_nano', num_classes=7)\n"
            "print(m.num_classes, list_models(task='detection'))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n, names = r.stdout.split(' ', 1)
    assert n == '7' and {'yolox_nano', 'yolox_tiny', 'yolox_s'} <= set(eval(names))

def test_validate_accepts_detectors_and_refuses_mixed_tasks():
    assert RunConfig(model='yolox_nano', data='synth_fer', img_size=64).validate().model == 'yolox_nano'
    assert RunConfig(model='yolox_tiny', data='yolo', root='somewhere', img_size=128).validate().data == 'yolo'
    RunConfig().validate()                                                          # regression still valid
    cases = [(dict(data='synth_fer'), "data: 'synth_fer' is not a data set of the regression model 'mamba_cnn_D' (synth, scut, mebeauty, kdef); it is detection data, for a detection model (fer_yolo_mamba, fer_yolo_mamba_mnv2, fer_yolo_mamba_nano, yolox_mnv2, yolox_nano"),
             (dict(data='fer', root='x'), "data: 'fer' is not a data set of the regression model"),
             (dict(model='yolox_nano', data='scut'), "data: 'scut' is not a data set of the detection model 'yolox_nano' (synth_fer, fer, yolo); it is regression data, for a regression model"),
             (dict(model='yolox_nano', data='synth'), "data: 'synth' is not a data set of the detection model"),
             (dict(model='yolox_nano', data='synth_fer', align='landmarks'), 'align: applies to regression runs'),
             (dict(model='yolox_nano', data='synth_fer', loss_param=[0.5]), 'loss_param: applies to regression runs'),
             (dict(model='yolox_nano', data='synth_fer', lr_schedule='plateau'), "lr_schedule: a detector trains with 'cosine'"),
             (dict(model='yolox_nano', data='synth_fer', img_size=100), 'img_size: a detector needs a multiple of 32'),
             (dict(model='yolox_nano', data='fer'), 'root: data'),
             (dict(model='vgg16'), "model: unknown model 'vgg16'")]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=re.escape(msg)): RunConfig(**kw)                # checked on construction
    c = RunConfig(); c.data = 'synth_fer'
    with pytest.raises(ValueError, match=re.escape('--data: ')): c.validate(flag=lambda k: '--' + k)

def test_run_dispatches_a_detector(tmp_path, capsys):
    from fbp_nb.train import config_for
    cfg = config_for('yolox_nano', n_train=8, n_val=4, n_test=4, img_size=64, batch_size=4, epochs=1, device='cpu', out=str(tmp_path / 'r'))
    r = run(cfg.to_dict(), progress=False)                                          # a dict, as for regression
    assert set(r.test) >= {'mAP50', 'mAP50_coco', 'mAP'} and r.out == tmp_path / 'r'
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"mAP50={r.test['mAP50']:.3f} mAP={r.test['mAP']:.3f}"
    assert read_run(r.out / 'model.pt')['config']['task'] == 'detection'
    assert stored_config(read_run(r.out / 'model.pt')['config']).to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match='exists and is a file'):                   # --out checked before any work
        (tmp_path / 'file').write_text('x'); run(cfg.replace(out=str(tmp_path / 'file')), progress=False)

# --- fbp_train ------------------------------------------------------------------------------------------------------

def test_train_last_line_and_run_folder(det_run):
    out, lines = det_run
    assert LAST.fullmatch(lines[-1]), lines[-1]
    assert lines[0].startswith('data checked in ') and [l.split(':')[0] for l in lines[1:3]] == ['epoch 0', 'epoch 1']   # --no-progress: one line per epoch
    assert {'model.pt', 'last.pt', 'config.json', 'metrics.json', 'history.json', 'history.csv'} <= {p.name for p in out.iterdir()}
    m = json.loads((out / 'metrics.json').read_text())
    assert lines[-1] == f"mAP50={m['test']['mAP50']:.3f} mAP={m['test']['mAP']:.3f}" and m['epochs_run'] == 2
    c = RunConfig.from_json(out / 'config.json')
    # what was given, and the detection defaults (DET_DEFAULTS) for the rest
    assert (c.model, c.data, c.img_size, c.n_train, c.n_val, c.n_test, c.batch_size, c.epochs) == ('yolox_nano', 'synth_fer', 64, 32, 8, 8, 8, 2)
    assert (c.lr, c.wd, c.lr_schedule, c.augment, c.cls_weight) == (2e-3, 5e-4, 'cosine', 'off', 8.0)

def test_train_defaults_of_a_detector():
    "No --data, --img-size, ... given: the detection defaults, as `config_for` gives them to the Python API."
    from fbp_nb.cli import config_from_args, train_parser
    from fbp_nb.train import config_for
    assert config_from_args(train_parser().parse_args(['--model', 'yolox_nano'])) == config_for('yolox_nano') == config_for(RunConfig(model='yolox_nano'))

def test_train_with_progress_bar(tmp_path):
    rc, out, err = call(train_main, [a for a in TINY if a != '--no-progress'] + ['--n-train', '8', '--epochs', '1', '--out', str(tmp_path / 'p')])
    assert rc == 0, err
    assert LAST.fullmatch(out.strip().splitlines()[-1]) and 'epoch 0:' not in out

def test_resume_equals_the_uninterrupted_run(det_run, tmp_path, monkeypatch):
    "A run that crashes after epoch 0 (last.pt written) and is continued with --resume ends as the straight run."
    out, lines = det_run
    import fbp_nb.train as T
    class Crash(T.EpochPrinter):
        order = 200                                                                 # after last.pt
        def after_epoch(self): super().after_epoch(); raise RuntimeError('simulated crash')
    monkeypatch.setattr(T, 'EpochPrinter', Crash)
    with pytest.raises(RuntimeError, match='simulated crash'): call(train_main, TINY + ['--epochs', '2', '--out', str(tmp_path / 'c')])
    monkeypatch.undo()
    assert (tmp_path / 'c' / 'last.pt').is_file() and not (tmp_path / 'c' / 'model.pt').exists()
    rc, o, e = call(train_main, ['--resume', str(tmp_path / 'c' / 'last.pt'), '--device', 'cpu', '--no-progress'])
    assert rc == 0, e
    assert o.strip().splitlines()[-1] == lines[-1]
    h1, h2 = (json.loads((d / 'history.json').read_text()) for d in (out, tmp_path / 'c'))
    assert [r['train_loss'] for r in h2] == [r['train_loss'] for r in h1]
    # a run-defining option that differs from the stored run is an error naming it
    rc, o, e = call(train_main, ['--resume', str(tmp_path / 'c' / 'last.pt'), '--img-size', '96'])
    assert rc == 2 and 'fbp_train: error: --resume' in e and 'trained with --img-size 64, not 96' in e, e
    rc, o, e = call(train_main, ['--resume', str(out / 'model.pt')])
    assert rc == 2 and 'not a resumable checkpoint' in e, e

def test_resume_keeps_the_fields_no_option_sets(tmp_path):
    "A run started from Python with model_kwargs (no fbp_train option) is continued by fbp_train --resume with them."
    from fbp_nb.train import config_for
    from fbp_nb.learner import Callback, CancelFitException
    class Stop(Callback):
        order = 200
        def after_epoch(self): raise CancelFitException()
    cfg = config_for('yolox_nano', n_train=8, n_val=4, n_test=4, img_size=64, batch_size=4, epochs=2, wd=1e-4, device='cpu',
                           model_kwargs={'width': 0.125}, out=str(tmp_path / 'k'))
    with contextlib.redirect_stdout(io.StringIO()): run(cfg, progress=False, callbacks=[Stop()])
    rc, o, e = call(train_main, ['--resume', str(tmp_path / 'k' / 'last.pt'), '--device', 'cpu', '--no-progress'])
    assert rc == 0, e
    assert json.loads((tmp_path / 'k' / 'metrics.json').read_text())['epochs_run'] == 2
    assert read_run(tmp_path / 'k' / 'model.pt')['config']['model']['kwargs'] == {'num_classes': 7, 'width': 0.125}

def test_train_with_the_papers_recipe(tmp_path):
    "FER-YOLO-Mamba's recipe as options: Adam and the lr times --lr-decay every --lr-decay-every epochs; resume keeps them."
    from fbp_nb.train import config_for
    from fbp_nb.learner import Callback
    argv = TINY + ['--optimizer', 'adam', '--lr', '1e-3', '--lr-schedule', 'exp', '--lr-decay', '0.5', '--lr-decay-every', '1', '--wd', '0',
                   '--epochs', '3', '--out', str(tmp_path / 'a')]
    rc, o, e = call(train_main, argv)
    assert rc == 0, e
    c = RunConfig.from_json(tmp_path / 'a' / 'config.json')
    assert (c.optimizer, c.lr, c.lr_schedule, c.lr_decay, c.lr_decay_every, c.wd) == ('adam', 1e-3, 'exp', 0.5, 1, 0.0)
    h = json.loads((tmp_path / 'a' / 'history.json').read_text())
    assert [r['lr'] for r in h] == pytest.approx([1e-3, 5e-4, 2.5e-4])             # no warm-up, one decay per epoch
    rc, o, e = call(train_main, ['--resume', str(tmp_path / 'a' / 'last.pt'), '--optimizer', 'adamw'])
    assert rc == 2 and "trained with --optimizer adam, not 'adamw'" in e, e
    seen = []
    class Spy(Callback):
        def before_fit(self): seen.append(type(self.learn.opt))
    cfg = config_for('yolox_nano', n_train=8, n_val=4, n_test=4, img_size=64, batch_size=4, epochs=1, device='cpu', optimizer='adam',
                           lr_schedule='exp', out=str(tmp_path / 'b'))
    with contextlib.redirect_stdout(io.StringIO()): run(cfg, progress=False, callbacks=[Spy()])
    assert seen == [torch.optim.Adam]

def test_train_on_a_yolo_folder(tmp_path):
    root = yolo_folder(tmp_path / 'yolo')
    rc, out, err = call(train_main, TINY + ['--data', 'yolo', '--root', str(root), '--epochs', '1', '--out', str(tmp_path / 'y')])
    assert rc == 0, err
    assert LAST.fullmatch(out.strip().splitlines()[-1])
    ck = read_run(tmp_path / 'y' / 'model.pt')['config']
    assert ck['data'] == 'yolo' and ck['root_abs'] == str(root.resolve()) and len(ck['class_names']) == 7
    # fbp_eval finds the folder from the run (relative root stored too) and scores the valid split as the test split
    rc, o, e = call(eval_main, [str(tmp_path / 'y' / 'model.pt'), '--device', 'cpu'])
    assert rc == 0 and o.strip().splitlines()[-1] == out.strip().splitlines()[-1], e
    # another YOLO folder with other classes: scoring the 7-class detector on it is an error, not a silently wrong table
    other = tmp_path / 'three'
    shutil.copytree(root, other)
    (other / 'data.yaml').write_text("train: train/images\nval: valid/images\nnc: 3\nnames: ['a', 'b', 'c']\n")
    for f in (other / 'valid' / 'labels').glob('*.txt'): f.write_text(''.join(f"{int(l.split()[0]) % 3} {l.split(' ', 1)[1]}\n" for l in f.read_text().splitlines()))
    for f in (other / 'train' / 'labels').glob('*.txt'): f.write_text(''.join(f"{int(l.split()[0]) % 3} {l.split(' ', 1)[1]}\n" for l in f.read_text().splitlines()))
    rc, o, e = call(eval_main, [str(tmp_path / 'y' / 'model.pt'), '--root', str(other), '--device', 'cpu'])
    assert rc == 2 and 'the detector has 7 classes, the data' in e and 'has 3' in e, e
    rc, o, e = call(train_main, TINY + ['--data', 'fer'])
    assert rc == 2 and "fbp_train: error: --root: data 'fer' needs the folder" in e, e
    rc, o, e = call(train_main, TINY + ['--data', 'fer', '--root', str(tmp_path / 'nowhere')])
    assert rc == 2 and 'nowhere' in e, e

def test_train_mixing_and_bad_options():
    cases = [(['--data', 'synth_fer'], "--data: 'synth_fer' is not a data set of the regression model 'mamba_cnn_D' (synth, scut, mebeauty, kdef); it is detection data, for a detection model (fer_yolo_mamba, fer_yolo_mamba_mnv2, fer_yolo_mamba_nano, yolox_mnv2, yolox_nano"),
             (['--model', 'yolox_nano', '--data', 'scut'], "--data: 'scut' is not a data set of the detection model 'yolox_nano'"),
             (['--model', 'yolox_nano', '--align', 'landmarks'], '--align: applies to regression runs'),
             (['--model', 'yolox_nano', '--loss', 'huber'], '--loss: applies to regression runs'),
             (['--model', 'yolox_nano', '--arch', 'full'], '--arch: applies to regression runs'),
             (['--model', 'yolox_nano', '--width-mult', '0.5'], '--width-mult applies to Mamba-CNN and MobileNetV2, not yolox_nano'),
             (['--model', 'yolox_nano', '--stem', 'paper'], '--stem applies to Mamba-CNN'),
             (['--model', 'yolox_nano', '--img-size', '100'], '--img-size: a detector needs a multiple of 32'),
             (['--model', 'yolox_nano', '--lr-schedule', 'plateau'], "--lr-schedule: a detector trains with 'cosine'"),
             (['--model', 'yolox_nano', '--lr-schedule', 'exp', '--lr-decay', '2'], "--lr-decay: must be in (0, 1]"),
             (['--model', 'yolox_nano', '--wd', '-1'], "--wd: must be a finite number >= 0"),
             (['--cls-weight', '2'], "--cls-weight: applies to detection runs; the regression model 'mamba_cnn_D'")]
    for argv, msg in cases:
        rc, out, err = call(train_main, argv)
        assert rc == 2 and err.startswith('fbp_train: error: ') and msg in err, (argv, err)
    r = script('fbp_train', '--model', 'yolo_nano')                                  # argparse: the detectors are listed
    assert r.returncode == 2 and "invalid choice: 'yolo_nano'" in r.stderr and 'detectors: fer_yolo_mamba, fer_yolo_mamba_mnv2, fer_yolo_mamba_nano, yolox_mnv2, yolox_nano' in r.stderr, r.stderr

def test_train_help_mentions_detectors():
    r = script('fbp_train', '--help')
    assert r.returncode == 0 and 'synth_fer' in r.stdout and 'yolox_nano' in r.stdout and 'detection defaults' in r.stdout

# --- fbp_eval -------------------------------------------------------------------------------------------------------

def test_eval_detection_checkpoint(det_run):
    out, lines = det_run
    r = script('fbp_eval', str(out / 'model.pt'), '--device', 'cpu')                  # the console script, as a user runs it
    assert r.returncode == 0, r.stderr
    ev = r.stdout.strip().splitlines()
    assert ev[-1] == lines[-1]                                                           # the test line of training
    assert ev[0] == f"{out / 'model.pt'}: detection run of yolox_nano trained on synth_fer, scored on synth_fer test"
    assert ev[2].startswith('per class (test, P/R/F1 at score >= 0.5, IoU 0.5)')
    assert ev[3].split() == ['name', 'n_gt', 'n_pred', 'P', 'R', 'F1', 'AP50', 'AP']
    names = [l.split()[0] for l in ev[4:11]]
    assert names == list(SynthFER(n=1, img_size=32).class_names)
    assert re.fullmatch(r'test: mAP@0\.5 \(VOC all-point\) \d\.\d{4}   COCO mAP@0\.5 \d\.\d{4}   COCO mAP@\.5:\.95 \d\.\d{4}', ev[11]), ev[11]
    # the checkpoint alone rebuilds the test scenes: their boxes per class, counted here from the data set itself
    test = SynthFER(n=8, img_size=64, seed=0, split='test')
    ref = np.bincount(np.concatenate([test.labels(i) for i in range(len(test))]), minlength=7)
    assert [int(l.split()[1]) for l in ev[4:11]] == ref.tolist()
    m = json.loads((out / 'metrics.json').read_text())
    assert [r['n_gt'] for r in m['per_class']] == ref.tolist()
    rc, o, e = call(eval_main, [str(out), '--split', 'val', '--device', 'cpu'])        # a run folder, another split
    assert rc == 0 and 'per class (val' in o and LAST.fullmatch(o.strip().splitlines()[-1]), e
    rc, o, e = call(eval_main, [str(out / 'model.pt'), '--n-test', '4', '--device', 'cpu'])   # a data option: fewer test scenes
    n_gt = lambda lines: sum(int(l.split()[1]) for l in lines[4:11])
    assert rc == 0 and 0 < n_gt(o.strip().splitlines()) < n_gt(ev), e

def test_eval_detection_errors(det_run):
    out, _ = det_run
    cases = [(['--model', 'yolox_tiny'], 'checkpoint of yolox_nano, not --model yolox_tiny'),
             (['--protocol', '1'], 'protocol does not apply to a detection run'),
             (['--on-missing', 'skip'], 'on_missing does not apply to a detection run'),
             (['--data', 'scut'], "data: 'scut' is not a data set of the detection model 'yolox_nano'"),
             (['--data', 'fer'], "root: data 'fer' needs the folder")]
    for argv, msg in cases:
        rc, o, e = call(eval_main, [str(out / 'model.pt')] + argv)
        assert rc == 2 and e.startswith('fbp_eval: error: ') and msg in e, (argv, e)

def test_regression_checkpoint_refuses_detection_options(tmp_path):
    rc, o, e = call(train_main, ['--n-train', '16', '--n-val', '8', '--n-test', '8', '--img-size', '32', '--width-mult', '0.25',
                                 '--epochs', '1', '--device', 'cpu', '--no-progress', '--out', str(tmp_path / 'reg')])
    assert rc == 0, e
    rc, o, e = call(eval_main, [str(tmp_path / 'reg' / 'model.pt'), '--data', 'synth_fer'])
    assert rc == 2 and "fbp_eval: error: --data: 'synth_fer' is not a data set of the regression model" in e, e
    SynthFER(n=1, img_size=64).load_image(0).save(tmp_path / 'x.png')
    for opt in (['--conf', '0.5'], ['--out', str(tmp_path / 'o')]):
        rc, o, e = call(predict_main, [str(tmp_path / 'reg' / 'model.pt'), str(tmp_path / 'x.png')] + opt)
        assert rc == 2 and f"fbp_predict: error: {opt[0]} applies to detector checkpoints" in e, e

# --- fbp_predict ----------------------------------------------------------------------------------------------------

def test_predict_lines_and_pictures(det_run, tmp_path):
    out, _ = det_run
    scenes = SynthFER(n=2, img_size=128, seed=9, split='test')
    (tmp_path / 'sub').mkdir()
    paths = [tmp_path / 'a.png', tmp_path / 'sub' / 'a.png', tmp_path / 'b.jpg']
    scenes.load_image(0).resize((200, 128)).save(paths[0])
    scenes.load_image(1).save(paths[1])
    exif = Image.Exif(); exif[0x0112] = 6                                               # shown rotated by 90 degrees
    scenes.load_image(0).resize((200, 128)).save(paths[2], exif=exif)
    r = script('fbp_predict', str(out / 'model.pt'), *map(str, paths), '--conf', '0', '--out', str(tmp_path / 'drawn'), '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    rows = r.stdout.strip().splitlines()
    assert rows, 'conf 0 shows the detector\'s best guesses'
    size = {str(paths[0]): (200, 128), str(paths[1]): (128, 128), str(paths[2]): (128, 200)}   # b.jpg: upright
    for line in rows:
        m = BOX.fullmatch(line)
        assert m, line
        x1, y1, x2, y2 = map(float, m['box'].split(','))
        W, H = size[m['path']]
        assert m['cls'] in scenes.class_names and 0 <= x1 <= x2 <= W and 0 <= y1 <= y2 <= H, line
    drawn = sorted(p.name for p in (tmp_path / 'drawn').iterdir())
    assert drawn == ['a_boxes.png', 'a_boxes_2.png', 'b_boxes.png']                      # same stem: not overwritten
    assert Image.open(tmp_path / 'drawn' / 'b_boxes.png').size == (128, 200)
    assert f"wrote 3 picture(s) with boxes to {tmp_path / 'drawn'}" in r.stderr
    # the rows are predict_boxes' rows, printed by box_line; the default --conf (0.25) and the default --out
    from fbp_nb.detect import predict_boxes, box_line
    assert rows == [box_line(x) for x in predict_boxes(out / 'model.pt', paths, conf=0.0, device='cpu')]
    rc, o, e = call(predict_main, [str(out / 'model.pt'), str(paths[0]), '--device', 'cpu'])
    assert rc == 0 and (out / 'predictions' / 'a_boxes.png').is_file() and f"to {out / 'predictions'}" in e, e
    assert all(float(BOX.fullmatch(l)['score']) >= 0.25 for l in o.strip().splitlines())

def test_predict_reads_16bit_and_alpha_pictures(det_run, tmp_path):
    out, _ = det_run
    a = np.asarray(SynthFER(n=1, img_size=96, seed=2, split='test').load_image(0).convert('L'), dtype=np.uint16) * 257
    Image.fromarray(a).save(tmp_path / 'deep.png')                                       # 16-bit grey
    SynthFER(n=1, img_size=96, seed=2, split='test').load_image(0).convert('RGBA').save(tmp_path / 'alpha.png')
    rc, o, e = call(predict_main, [str(out / 'model.pt'), str(tmp_path / 'deep.png'), str(tmp_path / 'alpha.png'), '--conf', '0',
                                   '--out', str(tmp_path / 'd'), '--device', 'cpu'])
    assert rc == 0, e
    assert sorted(p.name for p in (tmp_path / 'd').iterdir()) == ['alpha_boxes.png', 'deep_boxes.png']
    assert all(Image.open(p).mode == 'RGB' for p in (tmp_path / 'd').iterdir())

def test_predict_errors(det_run, tmp_path):
    out, _ = det_run
    SynthFER(n=1, img_size=64).load_image(0).save(tmp_path / 'ok.png')
    (tmp_path / 'bad.jpg').write_bytes(b'not an image')
    ok = str(tmp_path / 'ok.png')
    cases = [([ok, str(tmp_path / 'missing.png')], 'image not found: ' + str(tmp_path / 'missing.png')),
             ([str(tmp_path / 'bad.jpg')], 'bad.jpg'),
             ([ok, '--align', 'none'], '--align applies to beauty checkpoints'),
             ([ok, '--no-align'], '--no-align applies to beauty checkpoints'),
             ([ok, '--cam', str(tmp_path)], '--cam applies to beauty checkpoints')]
    for k, (argv, msg) in enumerate(cases):
        rc, o, e = call(predict_main, [str(out / 'model.pt')] + argv + ['--out', str(tmp_path / f'x{k}')])
        assert rc == 2 and e.startswith('fbp_predict: error: ') and msg in e, (argv, e)
    assert not (tmp_path / 'x0').exists()                                               # a missing picture fails before any work
    r = script('fbp_predict', str(out / 'model.pt'), ok, '--conf', '2')
    assert r.returncode == 2 and 'must be between 0 and 1' in r.stderr, r.stderr
