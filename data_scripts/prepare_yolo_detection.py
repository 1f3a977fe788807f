#!/usr/bin/env python
"""Check (and optionally extract) a YOLO-format detection set for fbp_nb.det_data.YOLODetection: splits, classes, labels.

The loader reads the Roboflow/Ultralytics layout:
  <root>/data.yaml                    names (and nc; train/val/test folders) -- optional, default names: the 7 EMOTIONS
  <root>/<split>/images/*.jpg         (or <root>/images/<split>/); split 'val' also finds valid/ and validation/
  <root>/<split>/labels/<stem>.txt    one box per line "cls cx cy w h", normalised to [0, 1]
Examples:
  python data_scripts/prepare_yolo_detection.py --root ../shared/data/facial-emotion-detection --no-decode
  python data_scripts/prepare_yolo_detection.py --zip export.zip --dest data/fer-yolo --split train --split val
Reports per split the image folder, images, label files, boxes per class, images without a label file or with an
empty one (allowed: background images) and boxes clipped to the image. Label lines that fail to parse, class ids out
of range, label files without an image, a split named with --split that is absent and images that do not decode
(unless --no-decode) are problems. Prints the sha256 of data.yaml and a one-line summary; exits 1 naming what is wrong.
"""
from pathlib import Path
from _common import sha256, extract_many, locate, quiet_load, report, counts_str, split_values, decode_check, make_parser, finish
import fbp_nb.det_data as dd

LAYOUT = [('data.yaml', 'train', 'images')]
SPLITS = ('train', 'val', 'test')


def check(root, splits=SPLITS, required=False, expected=None, decode=True, show=20):
    "Run every check on the YOLO set `root`; a missing split is a problem when `required`; return (problems, summary)."
    problems, expected, parts, files, seen, names = [], expected or {}, [], [], {}, None
    if (root/'data.yaml').is_file(): print(f"sha256 {sha256(root/'data.yaml')}  data.yaml")
    else: print(f"note: no data.yaml in {root}: class names default to {', '.join(dd.EMOTIONS)}")
    for s in splits:
        ds, err = quiet_load(lambda: dd.YOLODetection(root, s, on_error='skip'), f"YOLODetection({root}, {s!r})",
                             missing_ok=not required)
        if ds is None:
            if err: problems.append(err)
            else: print(f"note: no {s} split")
            continue
        if ds.img_dir in seen:
            print(f"note: split {s} resolves to {ds.img_dir}, the folder of split {seen[ds.img_dir]}: not counted twice")
            continue
        seen[ds.img_dir], names = s, ds.class_names
        st = ds.stats
        n_empty = st['images_without_labels'] - st['images_without_label_file']
        cc = dict(zip(ds.class_names, ds.class_counts().tolist()))
        rel = ds.img_dir.relative_to(root) if ds.img_dir.is_relative_to(root) else ds.img_dir
        print(f"{s}: {len(ds)} images in {rel}, {st['label_files']} label files, {st['boxes']} boxes "
              f"({counts_str(cc, ds.class_names)})")
        print(f"{s}: {st['images_without_label_file']} images without a label file, {n_empty} with an empty one, "
              f"{st['clipped']} boxes clipped to the image")
        report(ds.problems, f'bad label line(s) or label file(s) without an image in {s}', problems, show)
        if s in expected and len(ds) != expected[s]: problems.append(f"split {s} has {len(ds)} images, expected {expected[s]}")
        parts.append(f"{s} {len(ds)} images / {st['boxes']} boxes ({st['images_without_labels']} without labels)")
        files += ds.files
    for s in expected:
        if s not in seen.values(): problems.append(f"--expected names split {s!r}, which was not found")
    if not parts: problems.append(f"no split of {', '.join(splits)} found under {root}")
    dec = decode_check(files, 'YOLO', problems) if decode else 'decode skipped'
    n_cls = f"{len(names)} classes" if names else 'no classes'
    return problems, '; '.join(parts) + f"; {n_cls}, {dec}"


def main(argv=None):
    ap = make_parser(__doc__, 'data set folder holding data.yaml (or a folder above it)', 'export archive(s); all extracted into --dest', many_zips=True)
    ap.add_argument('--split', action='append', help='split to check, each must exist (repeat; default: train, val '
                    'and test, those present)')
    ap.add_argument('--expected', action='append', metavar='SPLIT=N', help='images expected in a split (repeat)')
    ap.add_argument('--show', type=int, default=20, help='print at most this many messages per kind of problem')
    a = ap.parse_args(argv)
    expected = split_values(a.expected, '--expected', int)
    top = Path(a.root) if a.root else extract_many(a.zip, a.dest)
    root = locate(top, LAYOUT, 'YOLO data set')
    print(f"YOLO data set at {root}")
    finish('YOLO', *check(root, a.split or SPLITS, bool(a.split), expected, decode=not a.no_decode, show=a.show))


if __name__ == '__main__': main()
