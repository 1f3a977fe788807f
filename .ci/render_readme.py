"""Render README.md from nbs/index.ipynb without quarto (which cannot be installed offline).

Markdown cells are copied as they are; code cells become ```python blocks followed by their text outputs;
cells starting with `#| hide` are left out, as are `#|` directive lines.
    python .ci/render_readme.py          # write README.md
    python .ci/render_readme.py --check  # exit 1 if README.md is not what index.ipynb renders to
"""
import json, pathlib, sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

def render(nb_path=ROOT / 'nbs' / 'index.ipynb') -> str:
    nb = json.loads(pathlib.Path(nb_path).read_text(encoding='utf-8'))
    parts = ['<!-- Generated from nbs/index.ipynb by .ci/render_readme.py: edit the notebook, not this file. -->']
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        lines = src.splitlines()
        if cell['cell_type'] == 'markdown':
            parts.append(src.strip())
            continue
        if cell['cell_type'] != 'code' or (lines and lines[0].replace(' ', '').startswith('#|hide')): continue
        code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if code: parts.append(f'```python\n{code}\n```')
        for out in cell.get('outputs', []):
            text = out.get('text') or out.get('data', {}).get('text/plain')
            if text: parts.append('```\n' + ''.join(text).rstrip() + '\n```')
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        if readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python .ci/render_readme.py` and commit it')
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8'); print(f'wrote {readme}')
