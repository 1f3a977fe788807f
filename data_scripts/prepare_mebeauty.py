#!/usr/bin/env python
"""Check an extracted MEBeauty folder: scores/{train,val,test}_<year>.txt (`./cropped_images/... score`, 1-10).

Example:
  python data_scripts/prepare_mebeauty.py --root data/MEBeauty-database-main --no-decode
Checks that every score file parses (file:line on errors), scores are within 1-10, names are unique, the splits
are disjoint and every listed image exists (the release's cropped folder is known to miss some: --allow-missing
reports them without failing; load with MEBeauty(..., on_missing='skip')). Names in quotes (with spaces, as released)
are read as one name; a name listed twice in one file is reported (its rows' scores, and the mean the loader keeps). Prints sha256 of the score files and
a one-line summary; exits 1 when something is wrong.
"""

from pathlib import Path
from _common import fd, sha256, extract, locate, decode_check, make_parser, finish

SPLITS = ('train', 'val', 'test')


def check(root, year=2022, decode=True, allow_missing=False):
    "Run the checks on the MEBeauty folder `root`; return (problems, summary)."
    problems, seen, counts, n_missing, n_dup, all_paths = [], {}, {}, 0, 0, []
    for s in SPLITS:
        f = root/'scores'/f'{s}_{year}.txt'
        if not f.is_file():
            problems.append(f"missing {f}"); continue
        print(f"sha256 {sha256(f)}  {f.relative_to(root)}")
        try: res = fd.read_score_file(f, fd.MEBeauty.scale, duplicates='mean')
        except ValueError as e:
            problems.append(str(e)); continue
        names, scores, lines = res
        for n, ls, vs, kept in res.duplicates:
            print(f"note: {f}:{','.join(map(str, ls))}: {n} listed {len(ls)} times, scores {vs}"
                  f"{'' if len(set(vs)) == 1 else ' (differ)'}; MEBeauty keeps one row, score {kept:g}")
        n_dup += len(res.duplicates)
        counts[s] = len(names)
        rel = [n[2:] if n.startswith('./') else n for n in names]
        for n, ln in zip(rel, lines):
            if n in seen: problems.append(f"{f}:{ln}: {n} is also in {seen[n]}")
            else: seen[n] = f"{f.name}:{ln}"
        paths = [root/n for n in rel]
        miss = [f"{f}:{ln}: {p}" for p, ln in zip(paths, lines) if not p.is_file()]
        n_missing += len(miss)
        if miss:
            msg = f"{len(miss)} of {len(names)} images listed in {f.name} are not on disk, e.g. {miss[0]}"
            if allow_missing: print(f"note: {msg}")
            else: problems.append(msg + " (use --allow-missing to accept, and on_missing='skip' when loading)")
        all_paths += [p for p in paths if p.is_file()]
    dec = decode_check(all_paths, 'MEBeauty', problems) if decode else 'decode skipped'
    summary = (' / '.join(f"{s} {counts[s]}" for s in SPLITS if s in counts) +
               f" images, scale 1-10, {n_missing} listed but missing, {n_dup} listed twice, {dec}")
    return problems, summary


def main(argv=None):
    ap = make_parser(__doc__, 'extracted MEBeauty folder (or a folder above it)', 'a zip of the MEBeauty repository; extracted into --dest')
    ap.add_argument('--year', type=int, default=2022, help='score file suffix (scores/train_<year>.txt)')
    ap.add_argument('--allow-missing', action='store_true', help='report listed-but-missing images without failing')
    a = ap.parse_args(argv)
    top = Path(a.root) if a.root else extract(a.zip, a.dest or Path(a.zip).with_suffix(''))
    root = locate(top, [f'scores/train_{a.year}.txt'], 'MEBeauty')
    print(f"MEBeauty at {root}")
    finish('MEBeauty', *check(root, a.year, decode=not a.no_decode, allow_missing=a.allow_missing))


if __name__ == '__main__': main()
