"""Chapter 10's SCUT-FBP5500 table: VM-BeautyNet's branches alone, mean and adaptive fusion, and Mamba-CNN D, one recipe.

Every row starts from the ImageNet MobileNetV2 file (the only ImageNet network on these machines): the VM-BeautyNet rows
are the hybrid (`vm_beautynet_hybrid`: both branches read the stride-16 tokens of MobileNetV2's first 14 blocks, BatchNorm
frozen), Mamba-CNN D loads the whole trunk (chapter 06). Same split (60/40, 10% of train for validation), input size,
epochs, batch, lr (1e-4, cosine, the `--weights` default), augmentation and model selection (val loss) for every row.
Each run goes through `fbp_nb.train.run`; its RunConfig is printed and saved in the run folder (config.json), and the
fusion weights of every training batch are saved as fusion_trace.json. Finished runs (metrics.json) are skipped, so
the script can be stopped, restarted, or called once per row (one run per `flock` keeps the CPU lock short):

    python tests/benchmarks/vm_table.py                    # every row, seeds 0 and 1 (~1.5 h on 2 cores); restart it: finished rows are skipped
    python tests/benchmarks/vm_table.py --rows vit --seeds 1   # one row
    python tests/benchmarks/vm_table.py --report          # tests/benchmarks/results/vm_table.json from the finished runs
"""
import argparse, json, sys, time
from pathlib import Path

ROWS = {   # row -> (label, registry model, model_kwargs)
    'vit': ('ViT alone (hybrid)', 'vm_beautynet_hybrid', {'branch': 'vit'}),
    'mamba': ('Vision Mamba alone (hybrid)', 'vm_beautynet_hybrid', {'branch': 'mamba'}),
    'mean': ('VM-BeautyNet, mean fusion (hybrid)', 'vm_beautynet_hybrid', {'fusion': 'mean'}),
    'global': ('VM-BeautyNet, learned global weights (hybrid)', 'vm_beautynet_hybrid', {'fusion': 'global'}),
    'gated': ('VM-BeautyNet, gated fusion (hybrid)', 'vm_beautynet_hybrid', {'fusion': 'gated'}),
    'D': ('Mamba-CNN D-ImageNet (reference)', 'mamba_cnn_D', {}),
    'gated_fresh10': ('VM-BeautyNet, gated fusion, fresh layers at 10x lr (hybrid)', 'vm_beautynet_hybrid', {'fusion': 'gated'}),
    'vit_px': ('ViT alone (from pixels, vit_small)', 'vit_small', {}),
    'mamba_px': ('Vision Mamba alone (from pixels, vision_mamba_tiny)', 'vision_mamba_tiny', {}),
    'gated_px': ('VM-BeautyNet small, gated (from pixels)', 'vm_beautynet_small', {'fusion': 'gated'}),
}
ROW_CONFIG = {'gated_fresh10': dict(fresh_lr_mult=10.0)}   # run options of a row that differ from the common recipe
PIXEL_ROWS = ('vit_px', 'mamba_px', 'gated_px')   # no ImageNet weights: trained from scratch (lr 1e-3, plateau)
REPO = Path(__file__).resolve().parents[2]

def config(row, seed, a):
    from fbp_nb.train import RunConfig
    label, model, kw = ROWS[row]
    px = row in PIXEL_ROWS
    return RunConfig(data='scut', root=str(a.root), model=model, model_kwargs=dict(kw), weights=None if px else str(a.weights),
                     img_size=a.img_size, epochs=a.epochs, batch_size=32, seed=seed, cache='memory', device=a.device,
                     out=str(a.out / f'{row}_s{seed}'), **ROW_CONFIG.get(row, {}))

def train(row, seed, a):
    from fbp_nb.train import run
    cfg = config(row, seed, a)
    out = Path(cfg.out)
    if (out / 'metrics.json').is_file(): print(f'{row} seed {seed}: done already ({out})'); return
    last = out / 'last.pt'
    print(f'== {ROWS[row][0]}, seed {seed}\nrun(RunConfig.from_json({cfg.to_json()!r})' + (f', resume={str(last)!r})' if last.is_file() else ')'), flush=True)
    r = run(cfg, resume=last if last.is_file() else None, progress=False)   # an interrupted run continues from its last epoch
    fusion = getattr(r.learn.model, 'fusion', None)
    if fusion is not None: (out / 'fusion_trace.json').write_text(json.dumps(fusion.trace))

def report(a):
    rows, traces = [], {}
    for row, (label, model, kw) in ROWS.items():
        for m in sorted(a.out.glob(f'{row}_s*/metrics.json')):
            d = json.loads(m.read_text())
            seed = int(m.parent.name.rsplit('_s', 1)[1])
            cfg = d['config']['run']
            rows.append(dict(row=row, label=label, seed=seed, **{k: d['test'][k] for k in ('PC', 'MAE', 'RMSE')},
                             minutes=round(d['fit_seconds'] / 60, 1), epochs=cfg['epochs'], img_size=cfg['img_size'], model=model, model_kwargs=kw,
                             best_epoch=d['best_val']['epoch']))
            t = m.parent / 'fusion_trace.json'
            if t.is_file() and seed == 0: traces[label] = dict(weights=json.loads(t.read_text()), seed=seed)
    recipe = (f"SCUT-FBP5500 60/40, 10% of train for validation, {a.img_size} px, {a.epochs} epochs, batch 32, AdamW lr 1e-4 cosine, "
              f"BatchNorm of the ImageNet trunk frozen (the 'from pixels' rows: no weights, lr 1e-3, plateau), augmentation on, epoch kept by val loss, test scored once; CPU (2 cores, shared)")
    res = dict(recipe=recipe, rows=rows, traces=traces, command='python tests/benchmarks/vm_table.py --rows ROW --seeds SEED')
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(json.dumps(res, indent=1))
    import pandas as pd
    if rows:
        df = pd.DataFrame(rows).groupby('label', sort=False).agg(n=('seed', 'count'), PC=('PC', 'mean'), PC_sd=('PC', 'std'),
                                                                  MAE=('MAE', 'mean'), RMSE=('RMSE', 'mean'), minutes=('minutes', 'mean'))
        print(df.round(3).to_string())
    print(f'wrote {a.results}')

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rows', nargs='+', default=list(ROWS), choices=list(ROWS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    p.add_argument('--root', type=Path, default=REPO.parent / 'shared' / 'data' / 'SCUT-FBP5500')
    p.add_argument('--weights', type=Path, default=REPO.parent / 'shared' / 'weights' / 'mobilenet_v2_imagenet.pth')
    p.add_argument('--img-size', type=int, default=128)
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--device', default='auto')
    p.add_argument('--out', type=Path, default=REPO / 'runs' / 'vm_table')
    p.add_argument('--results', type=Path, default=REPO / 'tests' / 'benchmarks' / 'results' / 'vm_table.json')
    p.add_argument('--report', action='store_true', help='only write the results file from finished runs')
    a = p.parse_args(argv)
    if not a.report:
        for what, path in (('--root', a.root), ('--weights', a.weights)):
            if not path.exists(): p.error(f'{what}: {path} not found')
        for seed in a.seeds:
            for row in a.rows: train(row, seed, a)
    report(a)

if __name__ == '__main__': main()
