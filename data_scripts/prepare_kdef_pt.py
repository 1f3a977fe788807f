#!/usr/bin/env python
"""Check a KDEF-PT folder in the fbp_nb layout: labels.csv (`image,score[,sigma]`, 1-7) and images/.

KDEF-PT has no official file layout; fbp_nb.data.KDEFPT reads:
  <root>/labels.csv     header `image,score` (optional `sigma`), one row per image, KDEF names like AF01HAS.JPG
  <root>/images/<image>
Example:
  python data_scripts/prepare_kdef_pt.py --root data/KDEF-PT
Checks parsing (file:line on errors), the 1-7 scale, unique names, KDEF naming (needed for the split by subject),
that every image exists and decodes; reports subjects per gender and expressions (70 subjects x 3 expressions =
210 images expected; --expected to change). Prints sha256 of labels.csv and a one-line summary; exits 1 on problems.
"""

from collections import Counter
from pathlib import Path
from _common import fd, sha256, locate, decode_check, make_parser, finish


def check(root, expected=210, decode=True):
    "Run the checks on the KDEF-PT folder `root`; return (problems, summary)."
    problems, f = [], root/'labels.csv'
    print(f"sha256 {sha256(f)}  labels.csv")
    try: ds = fd.KDEFPT(root, 'all')
    except (ValueError, FileNotFoundError) as e:
        return [str(e)], ''
    if len(ds) != expected: problems.append(f"{len(ds)} images, expected {expected}")
    subj = Counter(s[0] for s in set(ds.subjects))
    expr = Counter(fd._KDEF.match(Path(n).name).group(4).upper() for n in ds.names)
    print(f"subjects: {dict(sorted(subj.items()))}; expressions: {dict(sorted(expr.items()))}")
    dec = decode_check(ds.paths, 'KDEF-PT', problems) if decode else 'decode skipped'
    summary = (f"{len(ds)} images, {len(set(ds.subjects))} subjects ({subj.get('F', 0)} F, {subj.get('M', 0)} M), "
               f"scores {ds.scores.min():.2f}-{ds.scores.max():.2f} on 1-7, sigma {'yes' if ds.sigma is not None else 'no'}, {dec}")
    return problems, summary


def main(argv=None):
    ap = make_parser(__doc__, 'folder with labels.csv and images/ (or a folder above it)')
    ap.add_argument('--expected', type=int, default=210, help='number of images expected (70 subjects x 3)')
    a = ap.parse_args(argv)
    top = Path(a.root)
    root = locate(top, ['labels.csv', 'images'], 'KDEF-PT')
    print(f"KDEF-PT at {root}")
    finish('KDEF-PT', *check(root, a.expected, decode=not a.no_decode))


if __name__ == '__main__': main()
