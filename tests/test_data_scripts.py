"""Tests of data_scripts/prepare_*.py: on tiny fixtures (always) and on the real SCUT-FBP5500 / YOLO set (when present).

The real data is found through $FBP_DATA (the folder holding the datasets) or <repo>/../shared/data;
those tests skip cleanly when it is absent.
"""
import contextlib, importlib, io, os, shutil, subprocess, sys, zipfile
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO/'data_scripts'
fd = pytest.importorskip('fbp_nb.data')


def run_cli(script, *args):
    "Run a prepare script as a real command; return (returncode, stdout + stderr)."
    p = subprocess.run([sys.executable, str(SCRIPTS/script), *map(str, args)], capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


def run(script, *args):
    "Run a prepare script's main() in this process (fast: no new interpreter); return (returncode, output)."
    if str(SCRIPTS) not in sys.path: sys.path.insert(0, str(SCRIPTS))
    mod = importlib.import_module(script[:-3])
    buf, rc = io.StringIO(), 0
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try: mod.main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str): buf.write(e.code + '\n')
    return rc, buf.getvalue()


def data_dir():
    for d in [os.environ.get('FBP_DATA'), os.environ.get('FBP_DATA_ROOT'), REPO.parent/'shared'/'data']:
        if d and Path(d).is_dir(): return Path(d)
    return None


@pytest.mark.parametrize('script', ['prepare_scut_fbp5500.py', 'prepare_mebeauty.py', 'prepare_kdef_pt.py',
                                    'prepare_rafdb.py', 'prepare_sfew.py', 'prepare_yolo_detection.py'])
def test_help(script):
    rc, out = run_cli(script, '--help')
    assert rc == 0 and 'usage:' in out and '--root' in out and '--no-decode' in out


def test_scut_fixture_ok_and_zip(tmp_path):
    root = fd.fake_scut_fbp5500(tmp_path/'SCUT-FBP5500_v2')
    rc, out = run('prepare_scut_fbp5500.py', '--root', tmp_path, '--expected', 20)   # finds the release one level down
    assert rc == 0, out
    assert 'SCUT-FBP5500 OK: 20 images' in out and '60/40 12+8' in out and '5 folds 16+4' in out
    assert '1 empty: CM1.pts' in out and '20/20 decode' in out and out.count('sha256 ') == 13
    z = tmp_path/'release.zip'
    with zipfile.ZipFile(z, 'w') as zf:
        for f in root.rglob('*'): zf.write(f, f.relative_to(tmp_path))
    rc, out = run('prepare_scut_fbp5500.py', '--zip', z, '--dest', tmp_path/'unzipped', '--expected', 20, '--no-decode')
    assert rc == 0 and 'decode skipped' in out, out


def test_scut_fixture_problems(tmp_path):
    root = fd.fake_scut_fbp5500(tmp_path/'s')
    rc, out = run('prepare_scut_fbp5500.py', '--root', root)                          # default expects 5500
    assert rc == 1 and 'Images/ has 20 .jpg files, expected 5500' in out
    name = (root/'train_test_files'/'All_labels.txt').read_text().split()[0]
    (root/'Images'/name).write_bytes(b'garbage')
    rc, out = run('prepare_scut_fbp5500.py', '--root', root, '--expected', 20)
    assert rc == 1 and '1 images do not decode' in out and name in out
    (root/'Images'/name).unlink()
    rc, out = run('prepare_scut_fbp5500.py', '--root', root, '--expected', 20, '--no-decode')
    assert rc == 1 and f'are not in Images/, e.g. {name}' in out
    shutil.rmtree(root/'train_test_files'/fd.SCUT_6040)
    rc, out = run('prepare_scut_fbp5500.py', '--root', root, '--expected', 20, '--no-decode')
    assert rc == 1 and 'missing' in out and 'split_of_60%training and 40%testing' in out
    rc, out = run('prepare_scut_fbp5500.py', '--root', tmp_path/'empty_dir_does_not_exist')
    assert rc == 1 and 'is not a folder' in out
    (tmp_path/'other').mkdir()
    rc, out = run('prepare_scut_fbp5500.py', '--root', tmp_path/'other')
    assert rc == 1 and 'missing: Images, train_test_files' in out


def test_mebeauty_fixture(tmp_path):
    root = fd.fake_mebeauty(tmp_path/'MEBeauty-database-main')
    rc, out = run('prepare_mebeauty.py', '--root', tmp_path)
    assert rc == 0 and 'MEBeauty OK: train 9 / val 3 / test 4 images' in out and '16/16 decode' in out, out
    next((root/'cropped_images').rglob('*.jpg')).unlink()
    rc, out = run('prepare_mebeauty.py', '--root', root, '--no-decode')
    assert rc == 1 and 'not on disk' in out and '--allow-missing' in out
    rc, out = run('prepare_mebeauty.py', '--root', root, '--no-decode', '--allow-missing')
    assert rc == 0 and '1 listed but missing' in out
    f = root/'scores'/'test_2022.txt'
    f.write_text(f.read_text() + './x.jpg 12\n')
    rc, out = run('prepare_mebeauty.py', '--root', root, '--no-decode', '--allow-missing')
    assert rc == 1 and 'test_2022.txt:5: score 12.0' in out
    rc, out = run('prepare_mebeauty.py', '--root', tmp_path/'nothing_here')
    assert rc == 1 and 'is not a folder' in out


def test_mebeauty_release_format(tmp_path):
    "The released format: quoted names with spaces, one name listed twice, one listed image missing per split."
    root = fd.fake_mebeauty(tmp_path/'MEBeauty-database-main', release=True)
    rc, out = run('prepare_mebeauty.py', '--root', root)
    assert rc == 1 and 'not on disk' in out and '--allow-missing' in out, out
    rc, out = run('prepare_mebeauty.py', '--root', root, '--allow-missing')
    assert rc == 0 and '3 listed but missing, 1 listed twice' in out and '13/13 decode' in out, out
    assert 'listed 2 times' in out and 'keeps one row' in out and ' (1).jpg' in out


def test_kdef_fixture(tmp_path):
    root = fd.fake_kdef_pt(tmp_path/'KDEF-PT')
    rc, out = run('prepare_kdef_pt.py', '--root', root, '--expected', 30)
    assert rc == 0 and 'KDEF-PT OK: 30 images, 10 subjects (5 F, 5 M)' in out, out
    rc, out = run('prepare_kdef_pt.py', '--root', root)
    assert rc == 1 and '30 images, expected 210' in out
    (root/'labels.csv').write_text('image,score\nAF01HAS.JPG,9\n')
    rc, out = run('prepare_kdef_pt.py', '--root', root)
    assert rc == 1 and 'labels.csv:2: score 9.0 for AF01HAS.JPG is outside the 1-7 scale' in out
    (root/'labels.csv').unlink()
    rc, out = run('prepare_kdef_pt.py', '--root', root)
    assert rc == 1 and 'missing: labels.csv' in out


def test_scut_real_no_decode():
    d = data_dir()
    if d is None or not (d/'SCUT-FBP5500').is_dir(): pytest.skip('SCUT-FBP5500 not found (set FBP_DATA or use ../shared/data)')
    rc, out = run_cli('prepare_scut_fbp5500.py', '--root', d/'SCUT-FBP5500', '--no-decode')
    assert rc == 0, out
    assert ('SCUT-FBP5500 OK: 5500 images, scores 1.02-4.75, 60/40 3300+2200, 5 folds 4400+1100, '
            '5500 landmark files (1 empty: CM152.pts), decode skipped') in out
    assert 'sha256 fa0096e90a2dad8d7f9f459335c608b48ab813c1530ad44e9822a6f62638b6ce  train_test_files/All_labels.txt' in out
    assert 'CF434.pts' in out     # the scrambled landmark file is reported


# --- expression-detection sets (fbp_nb.det_data) ---

def _img(path, wh, fmt=None):
    "Write a small solid-colour image of size `wh` = (w, h)."
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', wh, (30, 160, 90)).save(path, fmt)


RAF = {'train_00001.jpg': (5, (40, 48), '4.5 6 30.5 40'), 'train_00002.jpg': (1, (32, 32), '0 0 32 32'),
       'train_00003.jpg': (4, (36, 30), '2 2 20 20'), 'test_0001.jpg': (7, (30, 30), '5 5 25 25')}


def make_rafdb(root):
    "A tiny RAF-DB basic folder: 3 train + 1 test images, one box each (the layout RAFDBDetection reads)."
    for n, (lab, wh, box) in RAF.items():
        _img(root/'Image'/'original'/n, wh)
        (root/'Annotation'/'boxes').mkdir(parents=True, exist_ok=True)
        (root/'Annotation'/'boxes'/f"{n[:-4]}_boxes.txt").write_text(box + '\n')
    (root/'EmoLabel').mkdir(parents=True)
    (root/'EmoLabel'/'list_patition_label.txt').write_text(''.join(f"{n} {v[0]}\n" for n, v in RAF.items()))
    return root


def test_rafdb_fixture_ok_and_zips(tmp_path):
    root = make_rafdb(tmp_path/'RAF-DB'/'basic')
    rc, out = run('prepare_rafdb.py', '--root', tmp_path/'RAF-DB', '--expected', 3, 1)   # finds basic/ one level down
    assert rc == 0, out
    assert 'RAF-DB OK: train 3 + test 1 images (one box each), 7 classes' in out and '4/4 decode' in out
    assert 'train: 3 listed, 3 usable; surprise 1, fear 0, disgust 0, happy 1, sad 1, angry 0, neutral 0' in out
    assert 'test: 1 listed, 1 usable;' in out and 'neutral 1' in out
    assert f"sha256 {fd.hashlib.sha256((root/'EmoLabel'/'list_patition_label.txt').read_bytes()).hexdigest()}" in out
    # the release as two archives, the images as a nested Image/original.zip (extracted too)
    inner = tmp_path/'original.zip'
    with zipfile.ZipFile(inner, 'w') as zf:
        for f in (root/'Image'/'original').iterdir(): zf.write(f, f'original/{f.name}')
    z1, z2 = tmp_path/'labels.zip', tmp_path/'images.zip'
    with zipfile.ZipFile(z1, 'w') as zf:
        for f in [*(root/'EmoLabel').iterdir(), *(root/'Annotation'/'boxes').iterdir()]: zf.write(f, f.relative_to(root.parent))
    with zipfile.ZipFile(z2, 'w') as zf: zf.write(inner, 'basic/Image/original.zip')
    rc, out = run('prepare_rafdb.py', '--zip', z1, z2, '--dest', tmp_path/'unzipped', '--expected', 3, 1, '--no-decode')
    assert rc == 0 and 'train 3 + test 1 images' in out and 'decode skipped' in out, out
    assert (tmp_path/'unzipped'/'basic'/'Image'/'original'/'test_0001.jpg').is_file()


def test_rafdb_fixture_problems(tmp_path):
    root = make_rafdb(tmp_path/'basic')
    lf, boxes = root/'EmoLabel'/'list_patition_label.txt', root/'Annotation'/'boxes'
    rc, out = run('prepare_rafdb.py', '--root', root, '--no-decode')                      # default: the release counts
    assert rc == 1 and 'lists 3 train images, expected 12271' in out and 'lists 1 test images, expected 3068' in out
    (boxes/'train_00001_boxes.txt').write_text('4 6 300 40\n')
    (boxes/'train_00002_boxes.txt').write_text('1 2 3\n')
    lf.write_text(lf.read_text() + 'train_00009.jpg 9\ntrain_00010.jpg\ntest_0002.jpg 3\nval_0001.jpg 3\ntrain_00002.jpg 1\n')
    rc, out = run('prepare_rafdb.py', '--root', root, '--expected', 0, 0, '--no-decode')
    assert rc == 1, out
    assert 'train_00001_boxes.txt:1: box 0: (4, 6, 300, 40) outside the 40x48 image' in out
    assert "train_00002_boxes.txt:1: expected 4 numbers" in out
    assert 'list_patition_label.txt:5: label 9 not in 1..7' in out
    assert "list_patition_label.txt:6: expected 'name label'" in out
    assert 'list_patition_label.txt:7: image' in out and 'test_0002.jpg not found' in out
    assert 'list_patition_label.txt:8: val_0001.jpg starts with neither train_ nor test_' in out
    assert 'list_patition_label.txt:9: train_00002.jpg is also on line 2' in out
    assert 'RAF-DB FAILED: 3 problem(s)' in out
    make_rafdb(tmp_path/'b2')
    (tmp_path/'b2'/'Image'/'original'/'train_00003.jpg').write_bytes(b'not a jpeg')
    rc, out = run('prepare_rafdb.py', '--root', tmp_path/'b2', '--expected', 3, 1)
    assert rc == 1 and '1 listed images unreadable' in out and 'train_00003.jpg' in out
    assert '1 images do not decode' in out and 'train_00003.jpg cannot be read (ImageReadError' in out and 'cannot identify image file' in out
    shutil.rmtree(tmp_path/'b2'/'Image'/'original')
    (tmp_path/'b2'/'Image'/'original.zip').write_bytes(b'')
    rc, out = run('prepare_rafdb.py', '--root', tmp_path/'b2')
    assert rc == 1 and 'missing' in out and 'unzip Image/original.zip there' in out
    shutil.rmtree(boxes.parent)
    rc, out = run('prepare_rafdb.py', '--root', tmp_path/'basic')
    assert rc == 1 and 'no RAF-DB basic folder' in out and f'missing: Annotation in {root}' in out
    rc, out = run('prepare_rafdb.py', '--root', tmp_path/'nothing_here')
    assert rc == 1 and 'is not a folder' in out


def make_sfew(root):
    "A tiny SFEW folder: Train (3 images, with a boxes file), Val (2 images), Test (unlabelled, flat)."
    for split, rel in [('Train', 'Angry/a1.png'), ('Train', 'Happy/h1.png'), ('Train', 'Happy/h2.png'),
                       ('Val', 'Sad/s1.png'), ('Val', 'Surprise/u1.png'), ('Test', 't1.png')]:
        _img(root/split/rel, (100, 50))
    (root/'train_boxes.txt').write_text("Angry/a1.png 10,10,40,40,0\nHappy/h1.png 20,5,60,45,3 60,5,90,45,3\n")
    return root


def test_sfew_fixture_ok(tmp_path):
    root = make_sfew(tmp_path/'data'/'SFEW')
    bf = root/'train_boxes.txt'
    rc, out = run('prepare_sfew.py', '--root', tmp_path/'data', '--boxes', f'Train={bf}', '--expected', 'Val=2')
    assert rc == 0, out
    assert 'SFEW OK: Train 3 images, 3 boxes, 1 without a box / Val 2 images (no boxes file), 5/5 decode' in out
    assert 'Train: 3 images in 2 folders (Angry 1, Happy 2)' in out
    assert 'Train: 3 boxes (angry 1, disgust 0, fear 0, happy 2, neutral 0, sad 0, surprise 0)' in out
    assert 'not checked' in out and 'Test' in out and f'sha256 {fd.hashlib.sha256(bf.read_bytes()).hexdigest()}' in out
    z = tmp_path/'sfew.zip'
    with zipfile.ZipFile(z, 'w') as zf:
        for f in (root/'Val').rglob('*.png'): zf.write(f, f.relative_to(root.parent))
    rc, out = run('prepare_sfew.py', '--zip', z, '--dest', tmp_path/'unzipped', '--split', 'Val', '--no-decode')
    assert rc == 0 and 'SFEW OK: Val 2 images (no boxes file), decode skipped' in out, out


def test_sfew_fixture_problems(tmp_path):
    root = make_sfew(tmp_path/'SFEW')
    bf = root/'train_boxes.txt'
    bf.write_text("Angry/a1.png 10,10,40,40,3\nSad/s9.png 10,10,40,40,5\nHappy/h1.png 20,5,160,45,3\nHappy/h2.png 1,2,3\n")
    (root/'Val'/'Bored').mkdir(); _img(root/'Val'/'Bored'/'b1.png', (20, 20))
    rc, out = run('prepare_sfew.py', '--root', root, '--boxes', f'Train={bf}', '--expected', 'Val=9', '--no-decode')
    assert rc == 1, out
    assert 'Angry/a1.png: box class happy disagrees with its folder angry' in out
    assert 'train_boxes.txt:2: image' in out and 's9.png not found' in out
    assert 'train_boxes.txt:3: box 0: (20, 5, 160, 45) outside the 100x50 image' in out
    assert 'train_boxes.txt:4:' in out
    assert 'Bored: folder name is not one of' in out and 'split Val has 2 images, expected 9' in out
    (root/'Train'/'Happy'/'h2.png').write_bytes(b'garbage')
    rc, out = run('prepare_sfew.py', '--root', root, '--split', 'Train', '--boxes', f'Train={root/"none.txt"}')
    assert rc == 1 and 'boxes file' in out and 'none.txt for split Train not found' in out
    assert '1 unreadable images in Train' in out and '1 images do not decode' in out and 'h2.png' in out
    rc, out = run('prepare_sfew.py', '--root', root, '--split', 'Nope')
    assert rc == 1 and 'missing: Nope' in out
    rc, out = run('prepare_sfew.py', '--root', root, '--boxes', 'Train')
    assert rc == 1 and '--boxes must look like SPLIT=VALUE' in out
    rc, out = run('prepare_sfew.py', '--root', root/'Test')
    assert rc == 1 and 'no SFEW folder' in out


def test_yolo_fixture_problems(tmp_path):
    root = tmp_path/'yolo'
    for n in ('a', 'b', 'c'): _img(root/'train'/'images'/f'{n}.jpg', (32, 32))
    (root/'train'/'labels').mkdir()
    (root/'train'/'labels'/'a.txt').write_text('0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.4 0.4\n')
    (root/'train'/'labels'/'b.txt').write_text('')
    (root/'data.yaml').write_text("train: train/images\nnc: 2\nnames: ['x', 'y']\n")
    rc, out = run('prepare_yolo_detection.py', '--root', tmp_path)
    assert rc == 0 and 'YOLO OK: train 3 images / 2 boxes (2 without labels); 2 classes, 3/3 decode' in out, out
    assert 'train: 1 images without a label file, 1 with an empty one' in out and '(x 1, y 1)' in out
    (root/'train'/'labels'/'b.txt').write_text('0 0.5 0.5 0.2\n5 0.5 0.5 0.2 0.2\n')
    (root/'train'/'labels'/'z.txt').write_text('0 0.5 0.5 0.2 0.2\n')
    rc, out = run('prepare_yolo_detection.py', '--root', root, '--split', 'train', '--split', 'val', '--no-decode')
    assert rc == 1, out
    assert "b.txt:1: expected 5 fields" in out and 'b.txt:2: class id 5 out of range [0, 2)' in out
    assert 'z.txt: label file without an image' in out and "no image folder for split 'val'" in out


def test_yolo_real_no_decode():
    d = data_dir()
    if d is None or not (d/'facial-emotion-detection').is_dir():
        pytest.skip('facial-emotion-detection not found (set FBP_DATA or use ../shared/data)')
    rc, out = run('prepare_yolo_detection.py', '--root', d/'facial-emotion-detection', '--no-decode')
    assert rc == 0, out
    assert ('YOLO OK: train 943 images / 3373 boxes (0 without labels); val 185 images / 862 boxes (0 without labels); '
            '7 classes, decode skipped') in out
    assert 'train: 943 images in train/images, 943 label files, 3373 boxes (angry 602, disgust 194, fear 498' in out
    assert 'val: 185 images in valid/images' in out and 'note: no test split' in out
