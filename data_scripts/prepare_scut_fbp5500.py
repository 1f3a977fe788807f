#!/usr/bin/env python
"""Check (and optionally extract) the SCUT-FBP5500 release: counts, splits, folds, labels, landmarks, decoding.

Examples:
  python data_scripts/prepare_scut_fbp5500.py --root ../shared/data/SCUT-FBP5500 --no-decode
  python data_scripts/prepare_scut_fbp5500.py --zip SCUT-FBP5500_v2.1.zip --dest data/
Prints the sha256 of every label file and ends with a one-line summary; exits 1 when something is wrong.
"""

from pathlib import Path
import numpy as np
from _common import fd, sha256, extract, locate, decode_check, make_parser, finish

LAYOUT = ['Images', 'train_test_files']


def check(root, n_expected=5500, decode=True):
    "Run every check on the release folder `root`; return (problems, summary)."
    problems, tt = [], root/'train_test_files'
    jpgs = sorted(p.name for p in (root/'Images').glob('*.jpg'))
    print(f"Images/: {len(jpgs)} .jpg files")
    if len(jpgs) != n_expected: problems.append(f"Images/ has {len(jpgs)} .jpg files, expected {n_expected}")
    allf = tt/'All_labels.txt'
    if not allf.is_file():
        problems.append(f"missing {allf}"); return problems, ''
    try: names, scores, _ = fd.read_score_file(allf)
    except ValueError as e:
        problems.append(str(e)); return problems, ''
    ref = dict(zip(names, scores))
    if len(names) != n_expected: problems.append(f"{allf} lists {len(names)} images, expected {n_expected}")
    on_disk = set(jpgs)
    missing = [n for n in names if n not in on_disk]
    if missing: problems.append(f"{len(missing)} images in {allf.name} are not in Images/, e.g. {missing[0]}")
    extra = sorted(on_disk - set(names))
    if extra: problems.append(f"{len(extra)} images in Images/ have no label, e.g. {extra[0]}")
    files = [allf]
    n_tr6, n_te6 = int(round(0.6*n_expected)), n_expected - int(round(0.6*n_expected))
    n_trk, n_tek = n_expected - n_expected//5, n_expected//5

    def split(protocol, n_tr, n_te, label):
        out = {}
        for s, n_want in (('train', n_tr), ('test', n_te)):
            f = fd.scut_split_file(root, protocol, s)
            if not f.is_file():
                problems.append(f"missing {f}"); return None
            files.append(f)
            try: ns, sc, lines = fd.read_score_file(f)
            except ValueError as e:
                problems.append(str(e)); return None
            if len(ns) != n_want: problems.append(f"{f} lists {len(ns)} images, expected {n_want}")
            for n, v, ln in zip(ns, sc, lines):
                if n not in ref: problems.append(f"{f}:{ln}: {n} is not in All_labels.txt"); break
                if abs(ref[n] - v) > 1e-5: problems.append(f"{f}:{ln}: score {v} for {n} differs from All_labels.txt"); break
            out[s] = set(ns)
        if out['train'] & out['test']: problems.append(f"{label}: {len(out['train'] & out['test'])} images in both train and test")
        if out['train'] | out['test'] != set(names): problems.append(f"{label}: train + test does not cover All_labels.txt")
        return out

    split('60-40', n_tr6, n_te6, '60/40')
    tests = [split(k, n_trk, n_tek, f'fold {k}') for k in range(1, 6)]
    if all(tests) and sorted(n for t in tests for n in t['test']) != sorted(names):
        problems.append("the five test folds do not partition All_labels.txt")
    for f in files: print(f"sha256 {sha256(f)}  {f.relative_to(root)}")
    lmdir = root/'facial landmark'
    empty, broken, odd, n_pts = [], [], [], 0
    if not lmdir.is_dir(): problems.append(f"missing {lmdir}")
    else:
        for n in names:
            f = lmdir/(Path(n).stem + '.pts')
            if not f.is_file(): broken.append(f"missing {f.name}"); continue
            n_pts += 1
            try:
                p = fd.read_pts(f, empty='none')
                if p is None: empty.append(f.name)
                elif p.shape != (86, 2): broken.append(f"{f.name}: {p.shape[0]} points, expected 86")
                elif p[list(fd.SCUT_LEFT_EYE), 0].mean() >= p[list(fd.SCUT_RIGHT_EYE), 0].mean(): odd.append(f.name)
            except ValueError as e: broken.append(str(e))
        print(f"facial landmark/: {n_pts} .pts files, {len(empty)} empty: {', '.join(empty) or '-'}")
        if odd: print(f"note: {len(odd)} landmark file(s) with the eye points swapped or scrambled "
                      f"(align_face refuses them): {', '.join(odd)}")
        if broken: problems.append(f"{len(broken)} landmark files broken or missing, e.g. {broken[0]}")
    dec = decode_check([root/'Images'/n for n in jpgs], 'SCUT-FBP5500', problems) if decode else 'decode skipped'
    summary = (f"{len(jpgs)} images, scores {np.min(scores):.2f}-{np.max(scores):.2f}, 60/40 {n_tr6}+{n_te6}, "
               f"5 folds {n_trk}+{n_tek}, {n_pts} landmark files ({len(empty)} empty: {', '.join(empty) or '-'}), {dec}")
    return problems, summary


def main(argv=None):
    ap = make_parser(__doc__, 'extracted release folder (or a folder above it)', 'the release zip; extracted into --dest')
    ap.add_argument('--expected', type=int, default=5500, help='number of images expected (5500 for the release)')
    a = ap.parse_args(argv)
    top = Path(a.root) if a.root else extract(a.zip, a.dest or Path(a.zip).with_suffix(''))
    root = locate(top, LAYOUT, 'SCUT-FBP5500 release')
    print(f"SCUT-FBP5500 release at {root}")
    finish('SCUT-FBP5500', *check(root, a.expected, decode=not a.no_decode))


if __name__ == '__main__': main()
