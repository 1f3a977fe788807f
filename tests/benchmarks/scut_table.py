"""The real SCUT-FBP5500 benchmarks of notebooks 06 and 07 and the README, on the 60/40 split.

--table imagenet: every row starts from the ImageNet MobileNetV2 file (BatchNorm frozen, lr 1e-4): torchvision's
MobileNetV2 and Mamba-CNN A, B, C, D whose trunks load that file one-to-one (open gates, MobileNetV2's stem), plus D with
the paper's fresh 7x7 stem in front of the pretrained blocks.
--table models: from scratch: Mamba-CNN variants A-D and torchvision's MobileNetV2 with the identical recipe, and MobileNetV2
from the ImageNet file (BatchNorm frozen) as a reference row.
--table losses: one small backbone (compact Mamba-CNN D) trained with MSE, L1 and fixed and dynamic versions of the
three robust losses of 07_losses; every row selects its epoch on validation RMSE (--monitor val_RMSE).

Every row is one `fbp_train` command (printed, so each can be rerun by hand); runs that already have a metrics.json are
skipped, so the script can be stopped and restarted. The validation split is carved from the training split (10%,
stratified by group, seeded); the test split is scored once, at the end of each run, by the model chosen on validation.

    python tests/benchmarks/scut_table.py --table imagenet --epochs 3                         # the ImageNet table, 128 px, seeds 0 1 2
    python tests/benchmarks/scut_table.py --table imagenet --epochs 3 --img-size 224 --seeds 0 --rows mobilenet_v2 D
    python tests/benchmarks/scut_table.py --root ../shared/data/SCUT-FBP5500                 # from scratch, seeds 0 1 2
    python tests/benchmarks/scut_table.py --root ... --rows D mobilenet_v2 --seeds 0        # a subset
    python tests/benchmarks/scut_table.py --report                                          # table from finished runs
    python tests/benchmarks/scut_table.py --table losses --seeds 0                          # the loss comparison

The report (markdown table, mean and sample std over the finished seeds) is also written to OUT/summary.json.
"""
import argparse, json, shlex, subprocess, sys, time
from pathlib import Path
import numpy as np

ROWS = {   # row name -> the options that differ between rows (everything else is the shared recipe below)
    'A': ['--model', 'mamba_cnn_A'],
    'B': ['--model', 'mamba_cnn_B'],
    'C': ['--model', 'mamba_cnn_C'],
    'D': ['--model', 'mamba_cnn_D'],
    'mobilenet_v2': ['--model', 'mobilenet_v2'],
    'mobilenet_v2_imagenet': ['--model', 'mobilenet_v2', '--weights', '{weights}'],
}
IMAGENET_ROWS = {   # --table imagenet: every row from the ImageNet MobileNetV2 file
    'mobilenet_v2': ['--model', 'mobilenet_v2', '--weights', '{weights}'],
    'A': ['--model', 'mamba_cnn_A', '--weights', '{weights}'],
    'B': ['--model', 'mamba_cnn_B', '--weights', '{weights}'],
    'C': ['--model', 'mamba_cnn_C', '--weights', '{weights}'],
    'D': ['--model', 'mamba_cnn_D', '--weights', '{weights}'],
    'D_paper_stem': ['--model', 'mamba_cnn_D', '--weights', '{weights}', '--stem', 'paper'],
}
IMAGENET_LABELS = {'mobilenet_v2': 'MobileNetV2-ImageNet (torchvision)', 'A': 'Mamba-CNN A-ImageNet (inverted residual + GAP)',
                   'B': 'Mamba-CNN B-ImageNet (+ pyramid)', 'C': 'Mamba-CNN C-ImageNet (+ open gate)', 'D': 'Mamba-CNN D-ImageNet (gate + pyramid)',
                   'D_paper_stem': "Mamba-CNN D-ImageNet, the paper's fresh 7x7 stem"}
LR = {'mobilenet_v2_imagenet': '1e-4'}   # fine-tuning ImageNet weights: the paper's lr (at 1e-3 the features collapse)
LOSS_ROWS = {
    'mse': ['--loss', 'mse'],
    'l1': ['--loss', 'l1'],
    'paramsmoothl1_0.5': ['--loss', 'paramsmoothl1', '--loss-param', '0.5'],
    'huber_0.5': ['--loss', 'huber', '--loss-param', '0.5'],
    'tukey_1.5': ['--loss', 'tukey', '--loss-param', '1.5'],
    'dyn_paramsmoothl1': ['--loss', 'paramsmoothl1'],
    'dyn_huber': ['--loss', 'huber'],
    'dyn_tukey': ['--loss', 'tukey'],
}
LOSS_LABELS = {'mse': 'MSE', 'l1': 'L1', 'paramsmoothl1_0.5': 'ParamSmoothL1, a = 0.5 (fixed)', 'huber_0.5': 'Huber, b = 0.5 (fixed)',
               'tukey_1.5': 'Tukey, c = 1.5 (fixed)', 'dyn_paramsmoothl1': 'Dynamic ParamSmoothL1, 0.7 -> 0.3',
               'dyn_huber': 'Dynamic Huber, 0.7 -> 0.3', 'dyn_tukey': 'Dynamic Tukey, 2 -> 1'}
LOSS_BACKBONE = ['--model', 'mamba_cnn_D', '--arch', 'compact', '--model-kwargs', '{"dropout": 0.2}', '--monitor', 'val_RMSE']   # dropout 0.2: the compact default when the table was recorded (now 0.0)
LABELS = {'A': 'Mamba-CNN A (inverted residual + GAP)', 'B': 'Mamba-CNN B (+ pyramid)', 'C': 'Mamba-CNN C (+ gate)',
          'D': 'Mamba-CNN D (full)', 'mobilenet_v2': 'MobileNetV2 (torchvision), from scratch',
          'mobilenet_v2_imagenet': 'MobileNetV2, ImageNet init, BN frozen, lr 1e-4 (reference)'}

def recipe(a, row:str) -> list:
    lr = LR.get(row, '1e-3') if a.table == 'models' else '1e-4' if a.table == 'imagenet' else '1e-3'
    return ['--data', 'scut', '--root', a.root, '--protocol', '60-40', '--val-frac', '0.1', '--img-size', str(a.img_size),
            '--epochs', str(a.epochs), '--batch-size', '32', '--lr', lr, '--cache', 'memory', '--device', a.device]

def rows_of(a) -> dict:
    return ROWS if a.table == 'models' else IMAGENET_ROWS if a.table == 'imagenet' else {k: LOSS_BACKBONE + v for k, v in LOSS_ROWS.items()}
def labels_of(a) -> dict: return LABELS if a.table == 'models' else IMAGENET_LABELS if a.table == 'imagenet' else LOSS_LABELS

def command(a, row:str, seed:int) -> list:
    extra = [s.format(weights=a.weights) for s in rows_of(a)[row]]
    return ['fbp_train'] + recipe(a, row) + extra + ['--seed', str(seed), '--out', str(Path(a.out)/row/f'seed{seed}'), '--no-progress']

def run(a):
    for seed in a.seeds:
        for row in a.rows:
            out = Path(a.out)/row/f'seed{seed}'
            if (out/'metrics.json').is_file(): print(f'[skip] {row} seed {seed}: {out}/metrics.json exists', flush=True); continue
            cmd = command(a, row, seed)
            out.mkdir(parents=True, exist_ok=True)
            print(f'[run ] {row} seed {seed}: {shlex.join(cmd)}', flush=True)
            t0 = time.time()
            with open(out/'log.txt', 'w') as log: rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
            last = (out/'log.txt').read_text().strip().splitlines()[-1:]
            print(f'       rc={rc} {time.time() - t0:.0f}s {last[0] if last else ""}', flush=True)
            if rc != 0: sys.exit(f'{row} seed {seed} failed: see {out}/log.txt')

def report(a) -> dict:
    rows = {}
    for row in rows_of(a):
        runs = sorted((Path(a.out)/row).glob('seed*/metrics.json'))
        if not runs: continue
        ms = [json.loads(p.read_text()) for p in runs]
        vals = {k: np.array([m['test'][k] for m in ms]) for k in ('PC', 'MAE', 'RMSE')}
        args = ms[0]['config']['args']
        a.epochs, a.img_size = args['epochs'], args['img_size']   # the command of what was run, not of this call's defaults
        rows[row] = dict(label=labels_of(a)[row], seeds=[m['config']['args']['seed'] for m in ms], n_test=ms[0]['test']['n'],
                         epochs=args['epochs'], img_size=args['img_size'],
                         **{k: float(v.mean()) for k, v in vals.items()},
                         **{f'{k}_std': float(v.std(ddof=1)) if len(v) > 1 else None for k, v in vals.items()},
                         best_epoch=[m['best_val']['epoch'] for m in ms], fit_minutes=float(np.mean([m['fit_seconds'] for m in ms]) / 60),
                         command=shlex.join(command(a, row, ms[0]['config']['args']['seed'])).replace(str(Path(a.out)), a.out))
    fmt = lambda r, k: f"{r[k]:.3f}" + (f" ± {r[k + '_std']:.3f}" if r[k + '_std'] is not None else '')
    print(f"| model | seeds | PC ↑ | MAE ↓ | RMSE ↓ | min/run |\n|---|---|---|---|---|---|")
    for r in rows.values():
        print(f"| {r['label']} | {len(r['seeds'])} | {fmt(r, 'PC')} | {fmt(r, 'MAE')} | {fmt(r, 'RMSE')} | {r['fit_minutes']:.0f} |")
    print('\nreproduce one row (seed 0):')
    for k, r in rows.items(): print(f'  {k}: {r["command"]}')
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out)/'summary.json').write_text(json.dumps(rows, indent=1))
    return rows

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default='../shared/data/SCUT-FBP5500', help='SCUT-FBP5500 release folder')
    p.add_argument('--weights', default='../shared/weights/mobilenet_v2_imagenet.pth', help='ImageNet MobileNetV2 state dict')
    p.add_argument('--table', choices=('models', 'losses', 'imagenet'), default='models')
    p.add_argument('--rows', nargs='+', help='a subset of the rows (default: all rows of the table)')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--img-size', type=int, default=128)
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', help='runs folder (default: runs/scut128 or runs/scut128_losses)')
    p.add_argument('--report', action='store_true', help='only print the table of finished runs')
    a = p.parse_args()
    a.out = a.out or {'models': f'runs/scut{a.img_size}', 'losses': f'runs/scut{a.img_size}_losses', 'imagenet': f'runs/scut{a.img_size}_imagenet'}[a.table]
    a.rows = a.rows or list(rows_of(a))
    bad = [r for r in a.rows if r not in rows_of(a)]
    if bad: p.error(f"--rows: {bad} not in the {a.table} table ({', '.join(rows_of(a))})")
    if not a.report: run(a)
    report(a)
