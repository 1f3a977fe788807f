"""Issue 27, the rest of the fault pass: data checked before epoch 1 for both tasks (every image decoded, YOLO splits without
boxes, duplicate stems, train/test overlaps), a failure met mid-run says how to continue, detector weights files (a run's
model.pt, a state dict, the ImageNet file; everything else one sentence), crafted checkpoints held to RunConfig's bounds,
and one clear line instead of each traceback the pass found. Tiny synthetic or fake data, 32-64 px, one or two epochs."""
import contextlib, errno, io, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from fbp_nb.cli import train_main, eval_main, predict_main, error_message, as_options
from fbp_nb.data import fake_scut_fbp5500, SCUT_6040, face_geometry
from fbp_nb.learner import Callback, atomic_save
from fbp_nb.models import create_model
from fbp_nb.synth import SynthFaces, SynthFER
from fbp_nb.train import RunConfig, run, read_run, config_for, MidRunError
from test_detect_cli import yolo_folder

SCUT_KW = dict(data='scut', val_frac=0.2, img_size=32, model='mamba_cnn_A', arch='compact', model_kwargs={'width_mult': 0.25},
               epochs=1, batch_size=8, device='cpu')
REG = ['--n-train', '32', '--n-val', '8', '--n-test', '8', '--img-size', '32', '--width-mult', '0.25', '--epochs', '1', '--device', 'cpu', '--no-progress']
DET = ['--model', 'yolox_nano', '--img-size', '64', '--batch-size', '4', '--epochs', '1', '--device', 'cpu', '--no-progress']

def call(main, argv):
    "(exit code, stdout, stderr) of a console entry point called in this process."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(argv)
    return rc, out.getvalue(), err.getvalue()

def quiet(fn, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()): return fn(*a, **k)

def exe(name): return shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)

def split_names(root, split='test'): return (root / 'train_test_files' / SCUT_6040 / f'{split}.txt').read_text().split()[::2]

@pytest.fixture(scope='module')
def reg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('reg') / 'run'
    rc, _, err = call(train_main, REG + ['--out', str(out)])
    assert rc == 0, err
    return out

@pytest.fixture(scope='module')
def det_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('det') / 'run'
    rc, _, err = call(train_main, DET + ['--n-train', '8', '--n-val', '4', '--n-test', '4', '--out', str(out)])
    assert rc == 0, err
    return out

# --- data checked before epoch 1 ------------------------------------------------------------------------------------------

def test_every_scut_image_is_decoded_before_epoch_1(tmp_path):
    "A JPEG cut after its header passes a header check; the run decodes every image first (no --cache needed)."
    root = fake_scut_fbp5500(tmp_path / 'scut', n_per_group=10)
    victim = root / 'Images' / split_names(root, 'train')[7]
    victim.write_bytes(victim.read_bytes()[:300])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(ValueError, match=f'split: 1 of .*{victim.name}'):
        run(RunConfig(root=str(root), out=str(tmp_path / 'run'), **SCUT_KW), progress=False)
    assert 'epoch' not in buf.getvalue() and not (tmp_path / 'run' / 'last.pt').exists()

def test_scut_train_test_overlap_is_reported(tmp_path):
    root = fake_scut_fbp5500(tmp_path / 'scut', n_per_group=10)
    tr, te = (root / 'train_test_files' / SCUT_6040 / f'{s}.txt' for s in ('train', 'test'))
    te.write_text(te.read_text() + tr.read_text().splitlines()[0] + '\n')        # the first training photo also in test
    name = tr.read_text().split()[0]
    with pytest.raises(ValueError, match=f"the (train|val) and test splits share 1 image\\(s\\), first {name} .*train.txt:1 and .*test.txt"):
        quiet(run, RunConfig(root=str(root), out=str(tmp_path / 'run'), **SCUT_KW), progress=False)
    assert not (tmp_path / 'run' / 'last.pt').exists()

def test_a_5_point_pts_file_is_named(tmp_path):
    root = fake_scut_fbp5500(tmp_path / 'scut', n_per_group=10)
    pts = root / 'facial landmark' / (Path(split_names(root)[2]).stem + '.pts')
    pts.write_bytes(np.int32(5).astype('<i4').tobytes() + np.random.rand(5, 2).astype('<f4').tobytes())
    args = ['--data', 'scut', '--root', str(root), '--val-frac', '0.2', '--img-size', '32', '--width-mult', '0.25', '--arch', 'compact',
            '--model', 'mamba_cnn_A', '--batch-size', '8', '--device', 'cpu', '--no-progress', '--align', 'landmarks', '--out', str(tmp_path / 'r')]
    rc, out, err = call(train_main, args)
    assert rc == 2 and f'fbp_train: error: {pts}: 5 landmark points' in err and 'IndexError' not in err, err
    assert 'epoch' not in out
    with pytest.raises(ValueError, match='5 landmarks, but the eye points are 42-57'): face_geometry(np.random.rand(5, 2))

def test_a_file_broken_mid_run_is_named_and_resume_continues(tmp_path):
    "An image truncated after the checks (here: after epoch 0) stops the run naming it; after the fix, resume continues."
    root = fake_scut_fbp5500(tmp_path / 'scut', n_per_group=10)
    victim = root / 'Images' / split_names(root, 'train')[0]
    good = victim.read_bytes()
    class Truncate(Callback):
        def after_epoch(self):
            if self.learn.epoch == 0: victim.write_bytes(good[:300])
    out = tmp_path / 'run'
    cfg = RunConfig(root=str(root), out=str(out), **{**SCUT_KW, 'epochs': 2})
    with pytest.raises(MidRunError) as ei: quiet(run, cfg, progress=False, callbacks=[Truncate()])
    msg = str(ei.value)
    assert victim.name in msg and f"continue with resume={out / 'last.pt'}" in msg, msg
    assert f"--resume {out / 'last.pt'}" in as_options(msg)                 # what fbp_train prints
    assert not (out / 'model.pt').exists()
    victim.write_bytes(good)
    res = quiet(run, cfg, resume=out / 'last.pt', progress=False)
    assert len(res.history) == 2 and (out / 'model.pt').is_file()

def test_yolo_split_without_boxes_is_an_error_unless_allowed(tmp_path):
    root = yolo_folder(tmp_path / 'y', n_train=8, n_valid=3, size=64)
    (root / 'train' / 'labels').rename(root / 'train' / 'label')            # misnamed: no labels folder
    args = DET + ['--data', 'yolo', '--root', str(root)]
    rc, out, err = call(train_main, args + ['--out', str(tmp_path / 'a')])
    assert rc == 2 and 'the train split: no labels folder' in err and '(folders beside it: label;' in err and '--allow-empty' in err, err
    assert 'epoch' not in out and not (tmp_path / 'a' / 'last.pt').exists()
    (root / 'train' / 'label').rename(root / 'train' / 'labels')
    for f in (root / 'train' / 'labels').glob('*.txt'): f.write_text('')    # every label file empty
    rc, _, err = call(train_main, args + ['--out', str(tmp_path / 'b')])
    assert rc == 2 and 'every label file in' in err and '0 boxes in 8 images' in err, err
    rc, _, err = call(train_main, args + ['--out', str(tmp_path / 'c'), '--allow-empty'])     # asked for: it trains
    assert rc == 0, err
    with pytest.raises(ValueError, match='allow_empty: expected bool, got int 1'): RunConfig(model='yolox_nano', allow_empty=1)

def test_yolo_duplicate_stems_and_bad_pictures_before_epoch_1(tmp_path):
    root = yolo_folder(tmp_path / 'y', n_train=8, n_valid=3, size=64)
    from PIL import Image
    Image.open(root / 'train' / 'images' / 'train0.jpg').save(root / 'train' / 'images' / 'train0.png')
    rc, out, err = call(train_main, DET + ['--data', 'yolo', '--root', str(root), '--out', str(tmp_path / 'a')])
    assert rc == 2 and "share the stem 'train0'" in err and 'train0.png' in err and 'train0.jpg' in err, err
    (root / 'train' / 'images' / 'train0.png').unlink()
    bad = root / 'valid' / 'images' / 'valid1.jpg'
    bad.write_bytes(bad.read_bytes()[:200])                                  # a truncated JPEG in the scored split
    rc, out, err = call(train_main, DET + ['--data', 'yolo', '--root', str(root), '--out', str(tmp_path / 'b')])
    assert rc == 2 and 'the test split: 1 of 3 pictures do not read' in err and str(bad) in err, err
    assert 'epoch' not in out and not (tmp_path / 'b' / 'last.pt').exists()

def test_malformed_data_yaml_names_the_line(tmp_path):
    root = yolo_folder(tmp_path / 'y', n_train=4, n_valid=2, size=64)
    (root / 'data.yaml').write_text("train: train/images\nval: valid/images\nnames: [angry, happy\nnc: 2\n")
    rc, _, err = call(train_main, DET + ['--data', 'yolo', '--root', str(root), '--out', str(tmp_path / 'a')])
    assert rc == 2 and f"{root / 'data.yaml'}:" in err and 'not valid YAML' in err and 'Traceback' not in err, err
    (root / 'data.yaml').write_text("names: 5\n")
    rc, _, err = call(train_main, DET + ['--data', 'yolo', '--root', str(root), '--out', str(tmp_path / 'b')])
    assert rc == 2 and 'names must be a list of class names' in err, err

# --- weights files of detectors -----------------------------------------------------------------------------------------------

def test_detector_weights_from_a_run_and_refusals(det_run, tmp_path):
    rc, out, err = call(train_main, DET + ['--n-train', '8', '--n-val', '4', '--n-test', '4', '--weights', str(det_run / 'model.pt'),
                                          '--out', str(tmp_path / 'ft')])
    assert rc == 0, err                                                       # fine-tunes from a yolox_nano run's model.pt
    sd = read_run(det_run / 'model.pt')['model']
    torch.save(sd, tmp_path / 'plain.pt')
    m = create_model('yolox_nano', pretrained=tmp_path / 'plain.pt')
    assert all(torch.equal(v, sd[k]) for k, v in m.state_dict().items()) and m.pretrained_keys == set(sd)
    (tmp_path / 'random.pt').write_bytes(os.urandom(4096))
    class Payload:
        def __reduce__(self): return (os.system, ('echo PAYLOAD',))
    torch.save({'model': Payload()}, tmp_path / 'payload.pt')
    for name in ('yolox_nano', 'fer_yolo_mamba_nano', 'yolox_mnv2'):
        with pytest.raises(ValueError, match=f"{tmp_path / 'random.pt'}: not a readable checkpoint"): create_model(name, pretrained=tmp_path / 'random.pt')
        with pytest.raises(ValueError, match=f"{tmp_path / 'payload.pt'}: (refused|not a readable checkpoint)"): create_model(name, pretrained=tmp_path / 'payload.pt')
    with pytest.raises(ValueError, match='yolox_tiny: .*plain.pt does not fit YOLOX'): create_model('yolox_tiny', pretrained=tmp_path / 'plain.pt')
    rc, _, err = call(train_main, DET + ['--weights', str(tmp_path / 'random.pt'), '--out', str(tmp_path / 'r')])
    assert rc == 2 and err.count('\n') == 1 and 'random.pt: not a readable checkpoint' in err, err

def test_imagenet_file_for_yolox_mnv2():
    f = Path('/work/shared/weights/mobilenet_v2_imagenet.pth')
    if not f.is_file(): pytest.skip('no ImageNet MobileNetV2 file')
    m = create_model('yolox_mnv2', pretrained=f)
    assert m.pretrained_keys and all(k.startswith('backbone.backbone.') for k in m.pretrained_keys)

def test_eval_of_a_detector_on_a_folder_with_only_test(det_run, tmp_path):
    src = yolo_folder(tmp_path / 'y', n_train=2, n_valid=3, size=64)
    only = tmp_path / 'only'; only.mkdir()
    shutil.copytree(src / 'valid', only / 'test'); shutil.copy(src / 'data.yaml', only / 'data.yaml')
    rc, out, err = call(eval_main, [str(det_run / 'model.pt'), '--data', 'yolo', '--root', str(only), '--device', 'cpu'])
    assert rc == 0 and 'mAP50=' in out, err

# --- crafted checkpoints ---------------------------------------------------------------------------------------------------------

def _crafted(src, dst, edit):
    ck = torch.load(src, weights_only=True)
    edit(ck['config'])
    torch.save(ck, dst)
    return dst

def test_crafted_checkpoints_are_one_sentence(reg_run, det_run, tmp_path):
    from PIL import Image
    SynthFaces(1, img_size=32, split='test').render(0).save(tmp_path / 'face.png')
    def huge(c): c['img_size'] = c['run']['img_size'] = 200000
    f = _crafted(reg_run / 'model.pt', tmp_path / 'huge.pt', huge)
    rc, out, err = call(predict_main, [str(f), str(tmp_path / 'face.png'), '--device', 'cpu'])
    assert rc == 2 and f'{f}: its stored config is refused (img_size: must be <= 4096, got 200000)' in err and '--img-size' not in err, err
    def top_only(c): c['img_size'] = 200000
    with pytest.raises(ValueError, match='img_size 200000, but the run trained at 32'): read_run(_crafted(reg_run / 'model.pt', tmp_path / 't.pt', top_only))
    def renamed(c): c['model']['name'] = 'yolox_nano'
    with pytest.raises(ValueError, match="model entry 'yolox_nano', but the run trained 'mamba_cnn_D'"): read_run(_crafted(reg_run / 'model.pt', tmp_path / 'n.pt', renamed))
    def evil(c): c['model']['kwargs']['evil'] = 1
    f = _crafted(det_run / 'model.pt', tmp_path / 'evil.pt', evil)
    rc, _, err = call(eval_main, [str(f), '--device', 'cpu'])
    assert rc == 2 and f"{f}: its stored model: yolox_nano cannot be built with" in err and 'evil' in err and 'Traceback' not in err, err

def test_run_config_upper_bounds():
    for k, v in (('img_size', 200000), ('batch_size', 10**6), ('epochs', 10**6), ('n_train', 10**9), ('workers', 10**4), ('seed', -1)):
        with pytest.raises(ValueError, match=f'^{k}: must be'): RunConfig(**{k: v})
    assert RunConfig(img_size=4096).img_size == 4096

# --- one line instead of a traceback -------------------------------------------------------------------------------------------

def test_model_kwargs_the_builder_does_not_take(tmp_path):
    rc, out, err = call(train_main, REG + ['--model-kwargs', '{"evil": 1}', '--out', str(tmp_path / 'a')])
    assert rc == 2 and err.startswith("fbp_train: error: --model-kwargs: mamba_cnn_D_compact cannot be built with {'evil': 1, ") and \
        "unexpected keyword argument 'evil'" in err and err.count('\n') == 1, err
    with pytest.raises(ValueError, match="model_kwargs: .* cannot be built with {'width_mult': 'x'}"):
        quiet(run, config_for(n_train=8, n_val=4, n_test=4, img_size=32, epochs=1, model_kwargs={'width_mult': 'x'}, out=str(tmp_path / 'b')), progress=False)

def test_python_api_inputs():
    with pytest.raises(TypeError, match="run: expected a RunConfig"): run('str')
    with pytest.raises(ValueError, match='lr: must be a finite number > 0, got inf'): RunConfig(lr=float('inf'))
    rc, _, err = call(train_main, ['--lr', 'inf'])
    assert rc == 2 and err == 'fbp_train: error: --lr: must be a finite number > 0, got inf\n' and 'e.g.' not in err, err

def test_a_failed_checkpoint_write_leaves_no_tmp(tmp_path, monkeypatch):
    real = torch.save
    def full_disk(obj, f):                                   # torch's own error for a failed write, after part of the file is written
        Path(f).write_bytes(b'x' * 4096)
        with open('/dev/full', 'wb') as g: real(obj, g)
    monkeypatch.setattr(torch, 'save', full_disk)
    import shutil as sh
    monkeypatch.setattr(sh, 'disk_usage', lambda p: sh._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    (tmp_path / 'last.pt').write_bytes(b'old')
    with pytest.raises(OSError) as ei: atomic_save({'w': torch.zeros(1000)}, tmp_path / 'last.pt')
    assert ei.value.errno == errno.ENOSPC and not (tmp_path / 'last.pt.tmp').exists() and (tmp_path / 'last.pt').read_bytes() == b'old'
    assert error_message(ei.value).startswith(f"No space left on device: {tmp_path / 'last.pt'}: free some space")
    def torch_error(obj, f):                                 # how torch reports some failed writes: a RuntimeError
        Path(f).write_bytes(b'x' * 4096)
        raise RuntimeError('[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file data/0: file write failed')
    monkeypatch.setattr(torch, 'save', torch_error)
    with pytest.raises(OSError) as ei: atomic_save({'w': torch.zeros(1000)}, tmp_path / 'last.pt')
    assert ei.value.errno == errno.ENOSPC and not (tmp_path / 'last.pt.tmp').exists()
    assert error_message(ei.value).startswith(f"No space left on device (0.0 MB free): {tmp_path / 'last.pt'}: free some space")
    monkeypatch.setattr(sh, 'disk_usage', lambda p: sh._ntuple_diskusage(10**12, 0, 10**12))
    with pytest.raises(OSError, match='could not write the checkpoint .*file write failed'): atomic_save({}, tmp_path / 'last.pt')
    assert not (tmp_path / 'last.pt.tmp').exists() and (tmp_path / 'last.pt').read_bytes() == b'old'

def test_out_of_memory_hints_name_only_the_commands_options():
    e = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 21474836480 bytes.")
    assert error_message(e, 'fbp_train') == 'out of memory: lower --batch-size or --img-size (or --workers, --cache none)'
    assert error_message(e, 'fbp_eval') == 'out of memory: lower --batch-size (or --workers, --cache none)'
    assert error_message(e, 'fbp_predict') == 'out of memory: score fewer photos per call, or use --device cpu'
    assert error_message(RuntimeError('a bug')) is None

def test_sigint_is_one_line_and_exit_130(tmp_path):
    out = tmp_path / 'run'
    # 2000 faces: an epoch lasts seconds, so the signal lands inside epoch 1 (with 32 faces a fast machine finished the run first)
    p = subprocess.Popen([exe('fbp_train'), '--n-train', '2000', *REG[2:8], '--width-mult', '0.25', '--epochs', '200', '--device', 'cpu', '--no-progress', '--out', str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # a shell's background job ignores SIGINT: the child must not inherit that
    for line in p.stdout:
        if line.startswith('epoch 0:'): break
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert 'Traceback' not in err and err.count('\n') == 1, err
    assert err.startswith('fbp_train: interrupted; ') and f"continue with --resume {out / 'last.pt'}" in err, err
    assert not (out / '.lock').exists()

def test_predict_checks_the_cam_method_first_and_takes_a_run_folder(reg_run, tmp_path):
    SynthFaces(1, img_size=32, split='test').render(0).save(tmp_path / 'face.png')
    rc, out, err = call(predict_main, [str(reg_run / 'model.pt'), str(tmp_path / 'face.png'), '--cam', str(tmp_path / 'cam'), '--cam-method', 'nope', '--device', 'cpu'])
    assert rc == 2 and out == '' and "--cam-method: cam: unknown method 'nope'" in err, err
    rc, out, err = call(predict_main, [str(reg_run), str(tmp_path / 'face.png'), '--device', 'cpu'])     # the run folder
    assert rc == 0 and out.startswith(f"{tmp_path / 'face.png'}\t"), err
