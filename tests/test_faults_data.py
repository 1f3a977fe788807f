"""Regression tests for the data faults of issue 12: photos read as people take them, the real MEBeauty format,
missing files, non-UTF-8 text, NaN labels, the pre-training check. Every fixture is written here, in tmp dirs."""
import math, shutil, struct, time, warnings
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
import fbp_nb.data as fd
from fbp_nb.data import (load_image, image_size, read_score_file, read_rater_sigma, read_text, SCUTFBP5500, MEBeauty,
                         KDEFPT, fake_scut_fbp5500, fake_mebeauty, fake_kdef_pt)
from fbp_nb.det_data import YOLODetection, parse_yolo_labels, DetectionDataError, RAFDBDetection

GRAD = np.linspace(0, 1, 32*48).reshape(32, 48)                 # a ramp: dark top-left, bright bottom-right


# ---------------------------------------------------------------- images
def test_16bit_grey_png_is_not_white(tmp_path):
    a = np.round(GRAD*65535).astype(np.uint16)
    Image.fromarray(a).save(tmp_path/'g16.png')
    assert Image.open(tmp_path/'g16.png').mode == 'I;16'
    img = np.asarray(load_image(tmp_path/'g16.png'))
    assert img.shape == (32, 48, 3) and img.dtype == np.uint8
    ref = np.round(a/257).astype(np.uint8)                          # 65535 -> 255, independent of the library
    assert np.abs(img[..., 0].astype(int) - ref).max() <= 1
    assert 120 < img.mean() < 135                                   # the old reader gave ~254 (almost white)


def test_16bit_big_endian_and_int32(tmp_path):
    a = np.round(GRAD*65535).astype(np.uint16)
    im = Image.frombytes('I;16B', (48, 32), a.astype('>u2').tobytes())
    im.save(tmp_path/'b.tif')
    got = np.asarray(load_image(tmp_path/'b.tif'))[..., 0].astype(int)
    assert np.abs(got - np.round(a/257)).max() <= 1
    i32 = Image.fromarray(a.astype(np.int32))                       # mode 'I' holding 16-bit values
    assert i32.mode == 'I'
    i32.save(tmp_path/'i.tif')
    assert np.abs(np.asarray(load_image(tmp_path/'i.tif'))[..., 0].astype(int) - np.round(a/257)).max() <= 1


def test_16bit_rgb_png(tmp_path):
    cv2 = pytest.importorskip('cv2')
    rgb = np.stack([np.round(GRAD*65535), np.round(GRAD*30000), np.round((1 - GRAD)*65535)], -1).astype(np.uint16)
    cv2.imwrite(str(tmp_path/'c.png'), rgb[..., ::-1])
    got = np.asarray(load_image(tmp_path/'c.png')).astype(int)
    assert np.abs(got - rgb/257).max() <= 1.01


def test_float_tiff_is_not_black(tmp_path):
    Image.fromarray(GRAD.astype(np.float32)).save(tmp_path/'f.tif')
    assert Image.open(tmp_path/'f.tif').mode == 'F'
    img = np.asarray(load_image(tmp_path/'f.tif'))[..., 0].astype(int)
    assert np.abs(img - np.round(GRAD*255)).max() <= 1             # [0, 1] floats: x255 (the old reader: all 0)
    Image.fromarray((GRAD*1000 - 200).astype(np.float32)).save(tmp_path/'g.tif')   # outside [0, 1]: min-max
    img = np.asarray(load_image(tmp_path/'g.tif'))[..., 0].astype(int)
    assert img.min() == 0 and img.max() == 255 and np.abs(img - np.round(GRAD*255)).max() <= 1
    bad = GRAD.astype(np.float32).copy(); bad[0, 0] = np.nan
    Image.fromarray(bad).save(tmp_path/'nan.tif')
    with pytest.raises(ValueError, match=r'nan\.tif has NaN'): load_image(tmp_path/'nan.tif')


def test_rgb_float_tiff_via_opencv(tmp_path):
    cv2 = pytest.importorskip('cv2')
    rgb = np.stack([GRAD, GRAD*0.5, 1 - GRAD], -1).astype(np.float32)
    cv2.imwrite(str(tmp_path/'f3.tif'), rgb[..., ::-1])
    got = np.asarray(load_image(tmp_path/'f3.tif')).astype(int)
    assert np.abs(got - np.round(rgb*255)).max() <= 1
    assert image_size(tmp_path/'f3.tif') == (48, 32)


def test_exif_orientation_6_is_rotated(tmp_path):
    a = np.zeros((40, 60, 3), np.uint8); a[:20, :30] = (255, 0, 0); a[20:, 30:] = (0, 0, 255)
    ex = Image.Exif(); ex[0x0112] = 6                               # 6: the camera was turned 90 deg clockwise
    Image.fromarray(a).save(tmp_path/'phone.jpg', quality=98, exif=ex)
    img = load_image(tmp_path/'phone.jpg')
    assert img.size == (40, 60)                                     # width and height swapped
    ref = np.rot90(a, k=-1)                                         # viewers show it turned 90 deg clockwise
    assert np.abs(np.asarray(img).astype(int) - ref).mean() < 6


@pytest.mark.parametrize('mode', ['P', 'PA', 'LA', 'RGBA', 'CMYK', 'L', '1'])
def test_modes_become_rgb(tmp_path, mode):
    rgba = np.zeros((8, 8, 4), np.uint8); rgba[..., :3] = (10, 200, 30); rgba[..., 3] = 255; rgba[:, :4, 3] = 0
    im = Image.fromarray(rgba, 'RGBA')
    im = {'P': im.convert('RGB').convert('P'), 'PA': im.convert('PA'), 'LA': im.convert('LA'), 'RGBA': im,
          'CMYK': im.convert('RGB').convert('CMYK'), 'L': im.convert('L'), '1': im.convert('1')}[mode]
    ext = {'CMYK': 'tif', 'PA': 'png'}.get(mode, 'png')
    try: im.save(tmp_path/f'x.{ext}')
    except (OSError, KeyError): pytest.skip(f'PIL cannot write mode {mode}')
    out = load_image(tmp_path/f'x.{ext}')
    assert out.mode == 'RGB' and out.size == (8, 8)
    a = np.asarray(out).astype(int)
    if mode in ('LA', 'RGBA', 'PA'):                                # transparent half composited on white
        assert (a[:, :4] >= 250).all(), a[:, :4]
    if mode in ('RGBA', 'P', 'CMYK'): assert abs(a[0, 6, 1] - 200) <= 8   # P: the web palette's nearest green


def test_decompression_bomb_refused_with_name(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path/'bomb.png')
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path/'warn.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
    for f in ('bomb.png', 'warn.png'):                              # 400 > 2*100: PIL error; 144 > 100: PIL warning
        with pytest.raises(ValueError, match=f'{f} refused'): load_image(tmp_path/f)
        with pytest.raises(ValueError, match=f'{f} refused'): image_size(tmp_path/f)


def test_unreadable_images_name_the_file(tmp_path):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path/'a.jpg')
    (tmp_path/'cut.jpg').write_bytes((tmp_path/'a.jpg').read_bytes()[:200])
    (tmp_path/'txt.png').write_text('not an image')
    for f in ('cut.jpg', 'txt.png'):
        with pytest.raises(ValueError, match=f): load_image(tmp_path/f)
    with pytest.raises(FileNotFoundError, match='gone.jpg'): load_image(tmp_path/'gone.jpg')


def test_det_data_uses_the_same_reader(tmp_path):
    root = tmp_path/'yolo'; (root/'train'/'images').mkdir(parents=True); (root/'train'/'labels').mkdir()
    Image.fromarray(np.round(GRAD*65535).astype(np.uint16)).save(root/'train'/'images'/'a.png')
    (root/'train'/'labels'/'a.txt').write_text('3 0.5 0.5 0.2 0.2\n')
    ds = YOLODetection(root, 'train', img_size=48)
    x, t = ds[0]
    assert 0.4 < float(x[:, 8:40].mean()) < 0.6                   # not white


# ---------------------------------------------------------------- text files
def test_non_utf8_text_names_the_file(tmp_path):
    (tmp_path/'latin1.txt').write_bytes('Andr\xe9.jpg 3.0\n'.encode('latin-1'))
    (tmp_path/'u16.txt').write_text('AF1.jpg 3.0\n', encoding='utf-16')
    (tmp_path/'u16le.txt').write_bytes('AF1.jpg 3.0\n'.encode('utf-16-le'))
    with pytest.raises(ValueError, match=r'latin1\.txt: score file is not UTF-8 text: byte 0xe9.*iconv'):
        read_score_file(tmp_path/'latin1.txt')
    with pytest.raises(ValueError, match=r'u16\.txt: score file is not UTF-8 text: .*UTF-16'): read_score_file(tmp_path/'u16.txt')
    with pytest.raises(ValueError, match=r'u16le\.txt: .*NUL bytes'): read_score_file(tmp_path/'u16le.txt')
    (tmp_path/'sig.csv').write_bytes('image,sigma\nJos\xe9.jpg,0.5\n'.encode('cp1252'))
    with pytest.raises(ValueError, match=r'sig\.csv: table is not UTF-8'): read_rater_sigma(tmp_path/'sig.csv')
    (tmp_path/'bom.txt').write_text('AF1.jpg 3.0\n', encoding='utf-8-sig')
    assert read_score_file(tmp_path/'bom.txt')[0] == ['AF1.jpg']


def test_yolo_nan_inf_and_encoding(tmp_path):
    for ln, bad in [(2, 'nan 0.5 0.5 0.1 0.1'), (2, 'inf 0.5 0.5 0.1 0.1'), (2, '1 0.5 nan 0.1 0.1'), (2, '1 0.5 0.5 inf 0.1')]:
        f = tmp_path/'a.txt'; f.write_text('0 0.5 0.5 0.2 0.2\n' + bad + '\n')
        with pytest.raises(DetectionDataError, match=rf'a\.txt:{ln}: .*(not finite|non-finite)'): parse_yolo_labels(f, 7)
    f = tmp_path/'l.txt'; f.write_bytes('0 0.5 0.5 0.2 0.2 # caf\xe9\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=r'l\.txt: YOLO label file is not UTF-8'): parse_yolo_labels(f, 7)


def test_rafdb_nan_box(tmp_path):
    r = tmp_path/'raf'
    for d in ['EmoLabel', 'Image/original', 'Annotation/boxes']: (r/d).mkdir(parents=True)
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(r/'Image'/'original'/'train_00001.jpg')
    (r/'EmoLabel'/'list_patition_label.txt').write_text('train_00001.jpg 4\n')
    (r/'Annotation'/'boxes'/'train_00001_boxes.txt').write_text('1 nan 30 40\n')
    with pytest.raises(DetectionDataError, match=r'train_00001_boxes\.txt:1: .*not finite'): RAFDBDetection(r, 'train')


# ---------------------------------------------------------------- MEBeauty as released, missing files
def test_mebeauty_release_format(tmp_path):
    me = fake_mebeauty(tmp_path/'me', release=True)
    text = (me/'scores'/'train_2022.txt').read_text()
    assert '"./cropped_images/' in text and ' (1).jpg"' in text       # the released format really is written
    with pytest.raises(FileNotFoundError, match=r"train_2022\.txt:1: image .* not found .*on_missing='skip'"):
        MEBeauty(me, 'train')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        tr = MEBeauty(me, 'train', on_missing='skip')
    msgs = [str(x.message) for x in w]
    assert sum('skipped 1 of' in m for m in msgs) == 1                # one warning with the count
    assert sum('listed more than once' in m for m in msgs) == 1
    assert len(tr.missing) == 1 and tr.n_skipped == 1 and not tr.missing[0][1].exists()
    assert len(tr.duplicates) == 1 and len(tr.names) == len(set(tr.names))
    assert any(' (' in n for n in tr.names)                          # names with spaces survived
    lines = [l for l in text.splitlines() if l]
    assert len(tr) == len(lines) - 2                                  # minus the duplicate and the missing file
    img, y = tr[0]; assert img.size == (32, 32)
    for s in ('val', 'test'): assert MEBeauty(me, s, on_missing='skip').n_skipped == 1
    with pytest.raises(ValueError, match='duplicate name'): MEBeauty(me, 'train', on_missing='skip', duplicates='error')


def test_duplicate_with_different_scores(tmp_path):
    f = tmp_path/'s.txt'; f.write_text('"a b.jpg" 2\n"c.jpg" 5\n"a b.jpg" 4\n')
    names, scores, lines = res = read_score_file(f, (1, 10), duplicates='mean')
    assert names == ['a b.jpg', 'c.jpg'] and scores.tolist() == [3., 5.] and lines == [1, 2]
    assert res.duplicates == [('a b.jpg', [1, 3], [2., 4.], 3.)]
    assert read_score_file(f, (1, 10), duplicates='first')[1].tolist() == [2., 5.]
    with pytest.raises(ValueError, match=r's\.txt:3: duplicate name a b\.jpg \(first at line 1\)'): read_score_file(f, (1, 10))
    (tmp_path/'u.txt').write_text('./x/name (1).jpg 7.44\n')
    with pytest.raises(ValueError, match=r'u\.txt:1: .*must be in quotes'): read_score_file(tmp_path/'u.txt', (1, 10))


def test_on_missing_on_every_dataset(tmp_path):
    sc = fake_scut_fbp5500(tmp_path/'scut')
    first = read_score_file(fd.scut_split_file(sc, '60-40', 'train'))[0][0]
    (sc/'Images'/first).unlink()
    kd = fake_kdef_pt(tmp_path/'kdef'); (kd/'images'/'AF01HAS.JPG').unlink()
    me = fake_mebeauty(tmp_path/'me'); gone = sorted((me/'cropped_images').rglob('*.jpg'))[0]; gone.unlink()
    makers = [lambda **k: SCUTFBP5500(sc, **k), lambda **k: KDEFPT(kd, **k),
              lambda **k: MEBeauty(me, 'train', **k) if any(gone.name in l for l in (me/'scores'/'train_2022.txt').read_text().splitlines())
              else (MEBeauty(me, 'val', **k) if gone.name in (me/'scores'/'val_2022.txt').read_text() else MEBeauty(me, 'test', **k))]
    for make in makers:
        with pytest.raises(FileNotFoundError, match=r"on_missing='skip'"): make()
        with pytest.raises(FileNotFoundError): make(on_missing='error')
        with pytest.warns(UserWarning, match='skipped 1 of'): ds = make(on_missing='skip')
        assert ds.n_skipped == 1 and len(ds.missing) == 1
        with pytest.raises(ValueError, match="on_missing must be 'error' or 'skip'"): make(on_missing='ignore')


# ---------------------------------------------------------------- the pre-training check, sigma
def test_verify_fast_finds_a_corrupt_header_and_sampled_decodes(tmp_path):
    sc = fake_scut_fbp5500(tmp_path/'s', n_per_group=10)
    ds = SCUTFBP5500(sc)
    assert ds.verify(full=False) == [] and ds.verified['decoded'] == min(64, len(ds))
    p = ds.paths[3]; p.write_bytes(b'garbage')                        # header broken: found by the header pass
    with pytest.warns(UserWarning, match='1 of 24 images failed'): bad = ds.verify(full=False, sample=0)
    assert [b[0] for b in bad] == [ds.names[3]] and p.name in bad[0][1]
    assert ds.verified == dict(images=24, decoded=0, headers=24, bad=1, seconds=ds.verified['seconds'])
    # a JPEG cut after its header: only a decode finds it; sample = len(ds) decodes all
    q = ds.paths[5]; b6 = ds.paths[6].read_bytes(); q.write_bytes(b6[:len(b6)//2])
    assert [b[0] for b in ds.verify(full=False, sample=0)] == [ds.names[3]]
    assert {ds.names[3], ds.names[5]} <= {b[0] for b in ds.verify(full=False, sample=len(ds))}
    with pytest.raises(ValueError, match='failed to decode'): ds.verify(raise_on_error=True)
    assert {b[0] for b in ds.verify()} == {ds.names[3], ds.names[5]}   # the full mode, as before


def test_verify_empty_and_sigma(tmp_path):
    sc = fake_scut_fbp5500(tmp_path/'s')
    (tmp_path/'sig.csv').write_text('image,sigma\n' + ''.join(f'{n},0.5\n' for n in read_score_file(sc/'train_test_files'/'All_labels.txt')[0]))
    ds = SCUTFBP5500(sc, sigma_file=tmp_path/'sig.csv')
    assert ds.verify(full=False) == []
    ds.sigma[2] = np.nan
    with pytest.warns(UserWarning): bad = ds.verify(full=False)
    assert bad[0][0] == ds.names[2] and 'sig.csv: rater sigma nan' in bad[0][1]
    ds.names, ds.paths, ds.scores, ds.sigma = [], [], ds.scores[:0], None
    with pytest.warns(UserWarning, match='holds no images'): assert len(ds.verify()) == 1


def test_bad_sigma_in_files(tmp_path):
    sc = fake_scut_fbp5500(tmp_path/'s')
    names = read_score_file(sc/'train_test_files'/'All_labels.txt')[0]
    for bad in ('nan', '-0.5', 'inf'):
        (tmp_path/'sig.csv').write_text('image,sigma\n' + ''.join(f'{n},{bad if i == 3 else 0.5}\n' for i, n in enumerate(names)))
        with pytest.raises(ValueError, match=r'sig\.csv:5: sigma .* must be finite'): SCUTFBP5500(sc, sigma_file=tmp_path/'sig.csv')
    kd = fake_kdef_pt(tmp_path/'k')
    t = (kd/'labels.csv').read_text().splitlines(); a, b, _ = t[2].split(','); t[2] = f'{a},{b},-1'
    (kd/'labels.csv').write_text('\n'.join(t) + '\n')
    with pytest.raises(ValueError, match=r'labels\.csv:3: sigma .* finite number >= 0'): KDEFPT(kd)
