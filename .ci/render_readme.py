"""Render README.md from nbs/index.ipynb without quarto (which cannot be installed offline).

Markdown cells are copied with their relative links rewritten from nbs/ (where index.ipynb lives, so the links work in
JupyterLab, Colab and the docs site) to the repository root (`00_ssm.ipynb` -> `nbs/00_ssm.ipynb`, `../data_scripts/x`
-> `data_scripts/x`); code cells become ```python blocks followed by their text outputs; cells starting with `#| hide`
and the notebook's Colab setup cell are left out, as are `#|` directive lines.
    python .ci/render_readme.py          # write README.md
    python .ci/render_readme.py --check  # exit 1 if README.md is not what index.ipynb renders to
"""
import json, pathlib, posixpath, re, sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

SETUP = '# Setup: on Colab, install the library'   # the first cell of every notebook (fbp_nb.colab.setup)

def root_link(target:str) -> str:
    "A link target of index.ipynb (relative to nbs/) as seen from the repository root; URLs, anchors and absolute paths unchanged."
    if re.match(r'^([a-z][a-z0-9+.-]*:|#|/)', target): return target
    return posixpath.normpath(posixpath.join('nbs', target))

def root_links(md:str) -> str:
    return re.sub(r'(\]\()([^)\s]+)(\))', lambda m: m[1] + root_link(m[2]) + m[3], md)

def render(nb_path=ROOT / 'nbs' / 'index.ipynb') -> str:
    nb = json.loads(pathlib.Path(nb_path).read_text(encoding='utf-8'))
    parts = ['<!-- Generated from nbs/index.ipynb by .ci/render_readme.py: edit the notebook, not this file. -->']
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        lines = src.splitlines()
        if cell['cell_type'] == 'markdown':
            parts.append(root_links(src.strip()))
            continue
        if cell['cell_type'] != 'code' or (lines and lines[0].replace(' ', '').startswith('#|hide')) or src.startswith(SETUP): continue
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
