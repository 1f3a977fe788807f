"""Issue 23's neck-cost benchmark: inference time per image of YOLOX on the MobileNetV2 trunk (`yolox_mnv2`) against
FER-YOLO-Mamba on the same trunk (`fer_yolo_mamba_mnv2`) and its Table III ablation rows, each FER-YOLO-Mamba row with
the cheaper OSS forward (`ss2d_fast`, the default) and with the chapter-09 reference forward (`set_fast_oss(m, False)`),
same weights, in one process.

Batch 1, `--img-size` px (320: the paper's size), one thread, `model.raw(x)` (the network, no NMS) under no_grad in eval
mode. Every round times every model once, in turn (same machine load for all); the number kept per model is the
minimum over rounds, of the thread's CPU time (`time.thread_time`: what the model computes, less sensitive to other
processes on a shared machine) and, beside it, of wall time. Ratios are against `yolox_mnv2` of the same clock.
It also checks that both OSS forwards give the same predictions (max |difference|).

    OMP_NUM_THREADS=1 python tests/benchmarks/neck_cost.py                 # writes tests/benchmarks/results/neck_cost.json
    python tests/benchmarks/neck_cost.py --rounds 3 --out ''                # quick look, no record
"""
import argparse, json, os, platform, sys, time
from pathlib import Path
import torch

ROWS = [  # (label, model name, model kwargs)
    ('YOLOX on the MobileNetV2 trunk', 'yolox_mnv2', {}),
    ('FER-YOLO-Mamba on the trunk (FRM + OSS, 8 directions)', 'fer_yolo_mamba_mnv2', {}),
    ('  ablation: OSS only (no FRM)', 'fer_yolo_mamba_mnv2', {'frm': False}),
    ('  ablation: FRM only (no OSS)', 'fer_yolo_mamba_mnv2', {'oss': False}),
    ('  ablation: FRM + SS2D (4 directions)', 'fer_yolo_mamba_mnv2', {'directions': 4}),
]


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--img-size', type=int, default=320)
    p.add_argument('--rounds', type=int, default=15)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'neck_cost.json'), help="JSON record ('' for none)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from fbp_nb.models import create_model
    from fbp_nb.models.fer_yolo_mamba import set_fast_oss, OSS
    torch.manual_seed(0)
    x = torch.rand(1, 3, a.img_size, a.img_size)
    impls = {}                                                           # key -> (label, model, fast or None)
    for label, name, kw in ROWS:
        m = create_model(name, num_classes=7, **kw).eval()              # random init: the weights do not change the cost
        has_oss = any(isinstance(o, OSS) for o in m.modules())
        if not has_oss: impls[label] = (label, name, kw, m, None)
        else:
            impls[label] = (label, name, kw, m, True)
            impls[label + ' [reference OSS forward]'] = (label, name, kw, m, False)
    load0 = os.getloadavg()
    cpu, wall, diff = {k: float('inf') for k in impls}, {k: float('inf') for k in impls}, {}
    with torch.no_grad():
        for k, (_, _, _, m, fast) in impls.items():                       # warm-up, and the two forwards compared
            if fast is not None: set_fast_oss(m, fast)
            out = m.raw(x)[0]
            if fast is not None:
                set_fast_oss(m, not fast); diff[k] = float((m.raw(x)[0] - out).abs().max())
        for r in range(a.rounds):
            for k, (_, _, _, m, fast) in impls.items():
                if fast is not None: set_fast_oss(m, fast)
                t0, c0 = time.perf_counter(), time.thread_time()
                m.raw(x)
                cpu[k], wall[k] = min(cpu[k], time.thread_time() - c0), min(wall[k], time.perf_counter() - t0)
    load1 = os.getloadavg()
    base = ROWS[0][0]
    rows = []
    print(f"ms per image, batch 1, {a.img_size} px, {a.threads} thread(s), min of {a.rounds} alternating rounds")
    print(f"{'row':72s} {'cpu ms':>8s} {'x yolox':>8s} {'wall ms':>8s} {'x yolox':>8s}  params M")
    for k, (label, name, kw, m, fast) in impls.items():
        row = dict(row=k, model=name, kwargs=kw, oss_forward={None: 'none', True: 'fast (ss2d_fast, default)', False: 'reference (chapter 09)'}[fast],
                   cpu_ms=1e3 * cpu[k], wall_ms=1e3 * wall[k], cpu_ratio=cpu[k] / cpu[base], wall_ratio=wall[k] / wall[base],
                   params_M=sum(q.numel() for q in m.parameters()) / 1e6)
        if fast is not None: row['max_abs_diff_fast_vs_reference'] = diff[k]
        if fast is False: row['fast_speedup_cpu'] = cpu[k] / cpu[label]; row['fast_speedup_wall'] = wall[k] / wall[label]
        rows.append(row)
        print(f"{k:72s} {row['cpu_ms']:8.1f} {row['cpu_ratio']:8.2f} {row['wall_ms']:8.1f} {row['wall_ratio']:8.2f}  {row['params_M']:.2f}")
    for r in rows:
        if 'fast_speedup_cpu' in r: print(f"fast OSS forward speed-up, {r['row'].split(' [')[0].strip()}: {r['fast_speedup_cpu']:.2f}x cpu, "
                                          f"{r['fast_speedup_wall']:.2f}x wall; outputs differ by at most {r['max_abs_diff_fast_vs_reference']:.1e}")
    print(f"load average {load0[0]:.1f} before, {load1[0]:.1f} after ({os.cpu_count()} cores)")
    if a.out:
        rec = dict(command='OMP_NUM_THREADS=1 python tests/benchmarks/neck_cost.py' + ''.join(f' {s}' for s in (argv if argv is not None else sys.argv[1:])),
                   machine=f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, torch {torch.__version__}, {a.threads} thread(s)",
                   date=time.strftime('%Y-%m-%d %H:%M'), img_size=a.img_size, batch=1, rounds=a.rounds,
                   clock='min over rounds of thread CPU time (cpu_ms) and wall time (wall_ms); models alternate within each round',
                   load_average=dict(before=load0[0], after=load1[0]), baseline=base, rows=rows)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rec, indent=1) + '\n')
        print(f"wrote {os.path.relpath(a.out)}")


if __name__ == '__main__':
    main()
