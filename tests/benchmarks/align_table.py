"""Does face alignment help? SCUT-FBP5500 60/40 with and without the landmark crop (issue 12; the Dynamic ER-CNN paper's
Table 1 claims alignment helps). One recipe for both rows: Mamba-CNN D from the ImageNet MobileNetV2 file, 128 px,
3 epochs, AdamW 1e-4 cosine, augmentation on, 10% of train for validation, epoch kept by val loss, test scored once.
Each run goes through `fbp_nb.train.run` (the same as `fbp_train --data scut --align ...`); finished runs are skipped and
interrupted ones resume, so the script can be stopped and restarted:

    python tests/benchmarks/align_table.py                 # rows none + landmarks, seeds 0 and 1 (~25 min on 2 cores)
    python tests/benchmarks/align_table.py --report        # tests/benchmarks/results/align_table.json from the finished runs
"""
import argparse, json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROWS = {'none': 'whole image (--align none)', 'landmarks': "landmark crop (--align landmarks: eyes level, the Dynamic ER-CNN crop)"}

def config(row, seed, a):
    from fbp_nb.train import RunConfig
    return RunConfig(data='scut', root=str(a.root), model='mamba_cnn_D', weights=str(a.weights), img_size=128, epochs=3, align=row,
                     seed=seed, cache='memory', device=a.device, out=str(a.out / f'{row}_s{seed}'))

def command(cfg) -> str:
    return (f"fbp_train --data scut --root {cfg.root} --model mamba_cnn_D --weights {cfg.weights} --img-size 128 --epochs 3 "
            f"--align {cfg.align} --seed {cfg.seed} --cache memory")

def train(row, seed, a):
    from fbp_nb.train import run
    cfg = config(row, seed, a)
    out = Path(cfg.out)
    if (out / 'metrics.json').is_file(): print(f'{row} seed {seed}: done already ({out})'); return
    last = out / 'last.pt'
    print(f'== {ROWS[row]}, seed {seed}: {command(cfg)}' + (' --resume' if last.is_file() else ''), flush=True)
    run(cfg, resume=last if last.is_file() else None, progress=False)

def report(a):
    rows = []
    for row, label in ROWS.items():
        for m in sorted(a.out.glob(f'{row}_s*/metrics.json')):
            d = json.loads(m.read_text())
            r = d['config']['run']
            rows.append(dict(row=row, label=label, seed=r['seed'], **{k: d['test'][k] for k in ('PC', 'MAE', 'RMSE')}, n_test=d['test']['n'],
                             best_epoch=d['best_val']['epoch'], minutes=round(d['fit_seconds'] / 60, 1)))
    res = dict(recipe="SCUT-FBP5500 60/40, Mamba-CNN D from the ImageNet MobileNetV2 file, 128 px, 3 epochs, batch 32, AdamW 1e-4 cosine, "
                      "augmentation on, 10% of train for validation, epoch kept by val loss, test (2200 faces) scored once",
               rows=rows, command='python tests/benchmarks/align_table.py')
    a.results.write_text(json.dumps(res, indent=1))
    if rows:
        import pandas as pd
        print(pd.DataFrame(rows).groupby('label', sort=False)[['PC', 'MAE', 'RMSE']].agg(['mean', 'std', 'count']).round(3).to_string())
    print(f'wrote {a.results}')

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rows', nargs='+', default=list(ROWS), choices=list(ROWS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    p.add_argument('--root', type=Path, default=REPO.parent / 'shared' / 'data' / 'SCUT-FBP5500')
    p.add_argument('--weights', type=Path, default=REPO.parent / 'shared' / 'weights' / 'mobilenet_v2_imagenet.pth')
    p.add_argument('--device', default='auto')
    p.add_argument('--out', type=Path, default=REPO / 'runs' / 'align')
    p.add_argument('--results', type=Path, default=REPO / 'tests' / 'benchmarks' / 'results' / 'align_table.json')
    p.add_argument('--report', action='store_true', help='only write the results file from finished runs')
    a = p.parse_args(argv)
    if not a.report:
        for what, path in (('--root', a.root), ('--weights', a.weights)):
            if not path.exists(): p.error(f'{what}: {path} not found')
        for seed in a.seeds:
            for row in a.rows: train(row, seed, a)
    report(a)

if __name__ == '__main__': main()
