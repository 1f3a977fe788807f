#!/usr/bin/env python
"""Check (and optionally extract) an SFEW-style set for fbp_nb.det_data.SFEWDetection: class folders, boxes files, decoding.

SFEW 2.0 ships one folder per expression and no boxes; the loader reads:
  <root>/<SPLIT>/<Emotion>/*.png      folder name = expression (angry disgust fear happy neutral sad surprise,
                                      any case; Happiness/Sadness/Anger accepted)
  BOXES_FILE (one per split, optional)  FER-YOLO-Mamba lines "REL_PATH x1,y1,x2,y2,cls ..." relative to <root>/<SPLIT>
Examples:
  python data_scripts/prepare_sfew.py --root data/SFEW --boxes Train=data/sfew_train_boxes.txt --no-decode
  python data_scripts/prepare_sfew.py --zip Train.zip Val.zip --dest data/SFEW --split Train --split Val
Checks that every split folder holds only expression folders, every image is readable (and decodes unless
--no-decode), every boxes line parses (file:line on errors), names an image of the split, has class ids that agree
with the image's folder and boxes inside the image. Reports images per split and folder, boxes per class and images
without a box (allowed: empty target). Prints the sha256 of each boxes file and a one-line summary; exits 1 naming
what is missing or wrong.
"""
from pathlib import Path
from _common import (sha256, extract_many, find_dir, locate, image_size, quiet_load, report, counts_str, split_values,
                     decode_check, make_parser, finish)
import fbp_nb.det_data as dd


def _images(d): return sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in dd.IMG_EXTS)


def class_dirs(split_dir):
    "Sub-folders of `split_dir` that hold images (the class folders of an SFEW split)."
    return [c for c in sorted(split_dir.iterdir()) if c.is_dir() and not c.name.startswith('.') and _images(c)]


ALIASES = {'happiness': 'happy', 'sadness': 'sad', 'anger': 'angry'}   # folder names the loader also accepts


def is_expression(name) -> bool: return ALIASES.get(name.lower(), name.lower()) in dd.EMOTIONS


def split_dirs(root):
    "Sub-folders of `root` laid out as SFEW splits (`SPLIT/<Emotion>/images`, at least one expression folder)."
    return [s for s in sorted(root.iterdir()) if s.is_dir() and not s.name.startswith('.')
            and any(is_expression(c.name) for c in class_dirs(s))]


def check(root, splits, boxes=None, expected=None, decode=True, show=20):
    "Run every check on the SFEW folder `root` for `splits`; return (problems, summary)."
    problems, boxes, expected, parts, files = [], boxes or {}, expected or {}, [], []
    for s in list(boxes) + list(expected):
        if s not in splits: problems.append(f"--boxes/--expected name split {s!r}, which is not checked ({', '.join(splits)})")
    for s in splits:
        base = root/s
        if not base.is_dir(): problems.append(f"missing split folder {base}"); continue
        bf = boxes.get(s)
        if bf is not None:
            if bf.is_file(): print(f"sha256 {sha256(bf)}  {bf}")
            else: problems.append(f"boxes file {bf} for split {s} not found"); bf = None
        cdirs = class_dirs(base)
        per_folder = {c.name: len(_images(c)) for c in cdirs}
        loose = _images(base)
        if loose: print(f"note: {len(loose)} images directly in {base} are not in an expression folder (the loader ignores them)")
        unreadable = []
        for c in cdirs:
            for f in _images(c):
                try: image_size(f)
                except ValueError as e: unreadable.append(str(e))
        report(unreadable, f'unreadable images in {s}', problems, show)
        ds, err = quiet_load(lambda: dd.SFEWDetection(root, s, bf, on_error='skip'), f"SFEWDetection({root}, {s!r})")
        if err: problems.append(err); continue
        report(ds.problems, f'problem(s) with the folders or boxes of {s}', problems, show)
        cc = dict(zip(ds.class_names, ds.class_counts().tolist()))
        n_img, n_box, n_empty = len(ds), ds.stats['boxes'], ds.stats['images_without_labels']
        print(f"{s}: {n_img} images in {len(cdirs)} folders ({counts_str(per_folder)})")
        if bf is not None:
            print(f"{s}: {n_box} boxes ({counts_str(cc, dd.EMOTIONS)}), {n_empty} images without a box")
            parts.append(f"{s} {n_img} images, {n_box} boxes, {n_empty} without a box")
        else: parts.append(f"{s} {n_img} images (no boxes file)")
        if s in expected and n_img != expected[s]: problems.append(f"split {s} has {n_img} images, expected {expected[s]}")
        files += ds.files
    dec = decode_check(files, 'SFEW', problems) if decode else 'decode skipped'
    return problems, ' / '.join(parts) + f", {dec}"


def main(argv=None):
    ap = make_parser(__doc__, 'folder holding the split folders (or a folder above it)', 'archive(s) of the split folders; all extracted into --dest', many_zips=True)
    ap.add_argument('--split', action='append', help='split folder to check (repeat; default: every sub-folder '
                    'holding expression folders)')
    ap.add_argument('--boxes', action='append', metavar='SPLIT=FILE', help='FER-YOLO-Mamba boxes file of a split (repeat)')
    ap.add_argument('--expected', action='append', metavar='SPLIT=N', help='images expected in a split (repeat)')
    ap.add_argument('--show', type=int, default=20, help='print at most this many messages per kind of problem')
    a = ap.parse_args(argv)
    boxes, expected = split_values(a.boxes, '--boxes', Path), split_values(a.expected, '--expected', int)
    top = Path(a.root) if a.root else extract_many(a.zip, a.dest)
    if a.split: root = locate(top, a.split, 'SFEW')
    else:
        if not top.is_dir(): raise SystemExit(f"error: {top} is not a folder")
        root = find_dir(top, split_dirs)
        if root is None: raise SystemExit(f"error: no SFEW folder under {top}: expected ROOT/SPLIT/<Emotion>/ folders of images")
        other = [d.name for d in sorted(root.iterdir()) if d.is_dir() and _images(d)]
        if other: print(f"note: not checked (images but no expression folders, e.g. an unlabelled test set): {', '.join(other)}")
    splits = a.split or [s.name for s in split_dirs(root)]
    print(f"SFEW at {root}: splits {', '.join(splits)}")
    finish('SFEW', *check(root, splits, boxes, expected, decode=not a.no_decode, show=a.show))


if __name__ == '__main__': main()
