#!/usr/bin/env python
"""Check (and optionally extract) RAF-DB basic for fbp_nb.det_data.RAFDBDetection: labels, splits, classes, boxes, decoding.

RAF-DB is given out on request (no redistribution); the loader reads the layout of the `basic/` release:
  <root>/EmoLabel/list_patition_label.txt     "train_00001.jpg 5" per line (1 Surprise .. 7 Neutral); or in <root>
  <root>/Image/original/train_00001.jpg       the full images the boxes refer to
  <root>/Annotation/boxes/train_00001_boxes.txt   one line "x1 y1 x2 y2" in original pixels
Examples:
  python data_scripts/prepare_rafdb.py --root data/RAF-DB/basic --no-decode
  python data_scripts/prepare_rafdb.py --zip basic.zip [more.zip ...] --dest data/RAF-DB
(--zip extracts every archive into --dest, then a nested Image/original.zip or Annotation/boxes.zip.)
Checks that every label line parses (file:line on errors), names are unique and start with train_/test_, every image
exists (and decodes unless --no-decode), every boxes file parses and its box lies inside its image, and the counts
(12271 train + 3068 test in the release; --expected to change). Prints the sha256 of the label file, the counts per
split and class, and a one-line summary; exits 1 naming what is missing or wrong.
"""
from pathlib import Path
from _common import sha256, extract_many, extract_into, locate, image_size, quiet_load, report, counts_str, decode_check, make_parser, finish
import fbp_nb.det_data as dd

LABEL_FILE = ('EmoLabel/list_patition_label.txt', 'list_patition_label.txt')   # the loader's order
LAYOUT = [LABEL_FILE, 'Image', 'Annotation']
SPLITS = ('train', 'test')
NESTED = ('Image/original', 'Annotation/boxes')   # the release may hold these as zips


def check(root, expected=(12271, 3068), decode=True, show=20):
    "Run every check on the RAF-DB basic folder `root`; return (problems, summary)."
    problems = []
    lf = next(root/f for f in LABEL_FILE if (root/f).is_file())
    print(f"sha256 {sha256(lf)}  {lf.relative_to(root)}")
    img_dir, box_dir = root/'Image'/'original', root/'Annotation'/'boxes'
    for d in (img_dir, box_dir):
        if not d.is_dir():
            z = d.parent/f'{d.name}.zip'
            hint = f' (unzip {z.relative_to(root)} there, or pass the archives with --zip)' if z.is_file() else ''
            problems.append(f"missing {d}{hint}")
    if problems: return problems, ''
    listed, seen, dups, odd = {s: [] for s in SPLITS}, {}, [], []
    for ln, line in enumerate(lf.read_text().splitlines(), 1):
        p = line.split()
        if len(p) != 2: continue                       # the loader reports the malformed lines
        name = p[0]
        if name in seen: dups.append(f"{lf}:{ln}: {name} is also on line {seen[name]}"); continue
        seen[name] = ln
        s = name.split('_', 1)[0]
        if s in listed: listed[s].append((ln, name))
        else: odd.append(f"{lf}:{ln}: {name} starts with neither train_ nor test_ (the loader ignores it)")
    report(dups, 'names listed twice', problems, show)
    report(odd, 'names outside both splits', problems, show)
    unreadable = []
    for s in SPLITS:
        for ln, name in listed[s]:
            if (img_dir/name).is_file():
                try: image_size(img_dir/name)
                except ValueError as e: unreadable.append(f"{lf}:{ln}: {e}")
    report(unreadable, 'listed images unreadable', problems, show)
    msgs, usable = [], {}
    for s in SPLITS:
        ds, err = quiet_load(lambda: dd.RAFDBDetection(root, s, on_error='skip'), f"RAFDBDetection({root}, {s!r})")
        if err: problems.append(err); continue
        msgs += ds.problems
        usable[s] = len(ds)
        cc = dict(zip(ds.class_names, ds.class_counts().tolist()))
        print(f"{s}: {len(listed[s])} listed, {len(ds)} usable; {counts_str(cc, dd.RAF_LABELS.values())}")
    report(msgs, 'bad label line(s), missing image(s) or bad boxes file(s)', problems, show)
    for s, n in zip(SPLITS, expected):
        if n and len(listed[s]) != n: problems.append(f"{lf.name} lists {len(listed[s])} {s} images, expected {n}")
    extra = sorted(f.name for f in img_dir.iterdir() if f.suffix.lower() in dd.IMG_EXTS and f.name not in seen)
    if extra: print(f"note: {len(extra)} images in {img_dir} have no label line, e.g. {extra[0]}")
    stems = {Path(n).stem for n in seen}
    orphan = sorted(f.name for f in box_dir.glob('*_boxes.txt') if f.name[:-len('_boxes.txt')] not in stems)
    if orphan: print(f"note: {len(orphan)} boxes files in {box_dir} have no label line, e.g. {orphan[0]}")
    dec = 'decode skipped'
    if decode:
        files = [img_dir/n for s in SPLITS for _, n in listed[s] if (img_dir/n).is_file()]
        dec = decode_check(files, 'RAF-DB', problems)
    summary = (f"train {usable.get('train', 0)} + test {usable.get('test', 0)} images (one box each), "
               f"{len(dd.RAF_LABELS)} classes, {lf.name} sha256 {sha256(lf)[:12]}, {dec}")
    return problems, summary


def main(argv=None):
    ap = make_parser(__doc__, 'extracted basic/ folder (or a folder above it)', 'the release archive(s); all extracted into --dest', many_zips=True)
    ap.add_argument('--expected', type=int, nargs=2, default=(12271, 3068), metavar=('TRAIN', 'TEST'),
                    help='images expected per split (0 skips the check; default: the release, 12271 3068)')
    ap.add_argument('--show', type=int, default=20, help='print at most this many messages per kind of problem')
    a = ap.parse_args(argv)
    top = Path(a.root) if a.root else extract_many(a.zip, a.dest)
    root = locate(top, LAYOUT, 'RAF-DB basic')
    for d in NESTED if a.zip else []:
        if not (root/d).is_dir() and (root/f'{d}.zip').is_file(): extract_into(root/f'{d}.zip', root/d)
    print(f"RAF-DB basic at {root}")
    finish('RAF-DB', *check(root, a.expected, decode=not a.no_decode, show=a.show))


if __name__ == '__main__': main()
