"""Helpers shared by the data_scripts/prepare_*.py command-line checks (not part of the fbp_nb package)."""
import argparse, hashlib, sys, warnings, zipfile
from pathlib import Path
from PIL import Image

try:
    import fbp_nb.data as fd
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import fbp_nb.data as fd


def sha256(path) -> str:
    "Hex sha256 of a file."
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''): h.update(chunk)
    return h.hexdigest()


def extract(zip_path, dest) -> Path:
    "Extract `zip_path` into `dest` (skipped when already done) and return `dest`."
    zip_path, dest = Path(zip_path), Path(dest)
    if not zip_path.is_file(): sys.exit(f"error: zip file {zip_path} not found")
    marker = dest/f'.extracted-{zip_path.name}'
    if not marker.exists():
        print(f"extracting {zip_path} -> {dest}")
        with zipfile.ZipFile(zip_path) as z: z.extractall(dest)
        marker.write_text('ok\n')
    return dest


def _has(d, entry) -> bool:
    "True when `d/entry` exists; `entry` may be a tuple of alternatives (any one will do)."
    return any((d/m).exists() for m in entry) if isinstance(entry, tuple) else (d/entry).exists()


def _describe(entry) -> str:
    return ' or '.join(entry) if isinstance(entry, tuple) else entry


def _walk(top, max_depth=3):
    "Folders at and below `top`, breadth first, `max_depth` levels down (hidden folders skipped)."
    level = [Path(top)]
    for _ in range(max_depth + 1):
        yield from level
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith('.')]


def find_dir(top, pred, max_depth=3):
    "First folder at or below `top` (breadth first, `max_depth` levels) for which `pred(folder)` is true, else None."
    return next((d for d in _walk(top, max_depth) if pred(d)), None)


def find_layout(top, must_have, max_depth=3):
    "First folder at or below `top` (breadth first, `max_depth` levels) that contains every entry of `must_have`."
    return find_dir(top, lambda d: all(_has(d, m) for m in must_have), max_depth)


def locate(top, must_have, name, max_depth=3) -> Path:
    "`find_layout`, or exit naming the folder that came closest and what it lacks."
    top = Path(top)
    if not top.is_dir(): sys.exit(f"error: {top} is not a folder")
    root = find_layout(top, must_have, max_depth)
    if root is None:
        best = max(_walk(top, max_depth), key=lambda d: sum(_has(d, m) for m in must_have))
        if not any(_has(best, m) for m in must_have): best = top
        sys.exit(f"error: no {name} folder under {top}: expected a folder with {', '.join(map(_describe, must_have))} "
                 f"(missing: {', '.join(_describe(m) for m in must_have if not _has(best, m))} in {best})")
    return root


def extract_many(zips, dest=None) -> Path:
    "Extract every zip of `zips` into `dest` (default: beside the first zip, named after it) and return `dest`."
    zips = [Path(z) for z in zips]
    dest = Path(dest) if dest else zips[0].with_suffix('')
    for z in zips: extract(z, dest)
    return dest


def extract_into(zip_path, folder) -> Path:
    "Extract a zip whose members are `folder.name/...` (or bare files) so that they end up in `folder`; return `folder`."
    zip_path, folder = Path(zip_path), Path(folder)
    with zipfile.ZipFile(zip_path) as z: tops = {n.split('/', 1)[0] for n in z.namelist()}
    extract(zip_path, folder.parent if tops == {folder.name} else folder)
    return folder


def image_size(path):
    "(w, h) of an image from its header (fast, no decoding); a missing, unreadable or oversized file raises naming it."
    return fd.image_size(path)


def quiet_load(make, what, missing_ok=False):
    """`make()` (a loader with on_error='skip') without its warning -> (data set, None) or (None, problem).

    With `missing_ok` a FileNotFoundError (say, an absent split) gives (None, None).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return make(), None
    except FileNotFoundError as e:
        return None, (None if missing_ok else f"{what} fails: {e}")
    except (OSError, ValueError) as e: return None, f"{what} fails: {e}"


def split_values(items, what, conv=str) -> dict:
    "['Train=a.txt', ...] -> {'Train': conv('a.txt')}; exit naming a malformed item (`what`: the option)."
    out = {}
    for it in items or []:
        k, sep, v = it.partition('=')
        if not sep or not k or not v: sys.exit(f"error: {what} must look like SPLIT=VALUE, got {it!r}")
        try: out[k] = conv(v)
        except ValueError: sys.exit(f"error: {what} {it!r}: {v!r} is not valid")
    return out


def report(msgs, label, problems, show=20):
    "Print up to `show` of `msgs` (deduplicated) and add one problem `N <label>, e.g. <first>` to `problems`."
    msgs = list(dict.fromkeys(msgs))
    if not msgs: return 0
    for m in msgs[:show]: print(f"  {m}")
    if len(msgs) > show: print(f"  ... and {len(msgs) - show} more")
    problems.append(f"{len(msgs)} {label}, e.g. {msgs[0]}")
    return len(msgs)


def counts_str(counter, order=None) -> str:
    "'a 3, b 0, c 5' for a dict-like of counts (in `order` when given, else sorted)."
    keys = list(order) if order is not None else sorted(counter)
    return ', '.join(f"{k} {counter.get(k, 0)}" for k in keys)


def decode_all(paths, label):
    "Decode every image; return the list of error messages (prints progress every 1000)."
    bad = []
    for k, p in enumerate(paths, 1):
        try: fd.load_image(p)
        except (FileNotFoundError, ValueError) as e: bad.append(str(e))
        if k % 1000 == 0: print(f"  decoded {k}/{len(paths)} {label} images")
    return bad


def decode_check(paths, label, problems):
    "Decode every image of `paths`; add one problem when some fail; return the summary part ('N/M decode')."
    bad = decode_all(paths, label)
    if bad: problems.append(f"{len(bad)} images do not decode, e.g. {bad[0]}")
    return f"{len(paths) - len(bad)}/{len(paths)} decode"


def make_parser(doc, root_help, zip_help=None, many_zips=False):
    "The options every prepare script shares: --root or --zip (+ --dest), and --no-decode."
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument('--root', help=root_help)
    if zip_help:
        src.add_argument('--zip', nargs='+' if many_zips else None, help=zip_help)
        ap.add_argument('--dest', help=f"where to extract --zip (default: beside the {'first ' if many_zips else ''}zip)")
    ap.add_argument('--no-decode', action='store_true', help='skip decoding every image (the slow part)')
    return ap


def finish(name, problems, summary):
    "Print the problems and the one-line summary; exit 1 when there are problems."
    for p in problems: print(f"PROBLEM: {p}")
    if problems:
        print(f"{name} FAILED: {len(problems)} problem(s); first: {problems[0]}")
        sys.exit(1)
    print(f"{name} OK: {summary}")
