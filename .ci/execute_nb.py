"""Execute notebooks in place, keeping their outputs, the way `nbdev_test` runs them.

Cells flagged `#| cuda` run only when a GPU is present, `#| slow` only with --slow; skipped cells keep no stale output.
Cells with Quarto's `#| output: false` run but keep no saved output (used for figures of datasets whose licence
does not allow redistributing their images: the reader sees them when running the notebook with the data).
Usage: python .ci/execute_nb.py nbs/01_scan.ipynb [more.ipynb ...] [--slow]
"""
import re, sys, pathlib
import nbformat
from nbclient import NotebookClient

def flags(src):
    return set(re.findall(r'^#\|\s*(cuda|slow)\s*$', src, flags=re.M))

def execute(path, slow=False, timeout=3600):
    import torch
    skip = set() if slow else {'slow'}
    if not torch.cuda.is_available(): skip.add('cuda')
    path = pathlib.Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != 'code': continue
            if flags(cell.source) & skip:
                cell.outputs, cell.execution_count = [], None
                continue
            client.execute_cell(cell, i)
            if re.search(r'^#\|\s*output:\s*false\s*$', cell.source, flags=re.M): cell.outputs = []
    nbformat.write(nb, path)

if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    for p in args: execute(p, slow='--slow' in sys.argv); print('executed', p)
