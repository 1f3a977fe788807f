"""The README's main job, timed (not collected by pytest): `fbp_train` with no arguments, as the README's first command
runs it, on a quiet machine. Writes results/main_job.json and results/main_job.log (its output), which chapter 90 shows.

    python tests/benchmarks/main_job.py        # ~2.5 min on a 2-core CPU
"""
import json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path
import torch

RES = Path(__file__).parent / 'results'

if __name__ == '__main__':
    out = Path(tempfile.mkdtemp()) / 'main_job'
    cmd = ['fbp_train', '--no-progress', '--out', str(out)]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode: sys.exit(f"main_job: fbp_train failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    last = r.stdout.strip().splitlines()[-1]
    m = json.loads((out / 'metrics.json').read_text())
    res = dict(command='fbp_train', wall_seconds=round(wall, 1), fit_seconds=m['fit_seconds'], last_line=last,
               test={k: round(v, 4) for k, v in m['test'].items() if isinstance(v, float)},
               machine=f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}", date=time.strftime('%Y-%m-%d'))
    RES.mkdir(exist_ok=True)
    (RES / 'main_job.json').write_text(json.dumps(res, indent=1))
    (RES / 'main_job.log').write_text(f"$ fbp_train   # wall time {wall:.0f} s on {res['machine']}\n" + r.stdout)
    print(json.dumps(res, indent=1))
