"""Linear against quadratic: forward+backward time of a VSS stack (chapter 09) vs a ViT block stack, growing token counts.

Both stacks have the same width and depth and see the same (1, side, side, width) tokens: VMamba-T's first-stage blocks
(`VSSBlock`: 4-direction SS2D on the course's selective scan, d_state 1, MLP 4x) against torchvision's ViT `EncoderBlock`
(multi-head self-attention, MLP 4x). Times are medians of `--repeats` runs (one warm-up first), CPU by default.
A size is skipped when the previous size's time, scaled by the model's growth (x4 tokens: ViT x16, VSS x4), would pass `--cap`.
Prints the table with the ViT/VSS ratio and the token count where the curves cross, fits the log-log slopes, writes a
png (`--out`) and a JSON next to this file (results/bench_vss_vit.json).

    flock /tmp/cpu.lock nice -n 5 python tests/benchmarks/bench_vss_vit.py --out nbs/images/bench_vss_vit.png
"""
import argparse, json, math, statistics, time
from pathlib import Path
import torch
from torch import nn

def vss_stack(dim, depth):
    from fbp_nb.models.vmamba import VSSBlock
    return nn.Sequential(*[VSSBlock(dim, mlp_ratio=4.0, d_state=1, ssm_ratio=1.0, k=4, gate=False) for _ in range(depth)])

def vit_stack(dim, depth, heads):
    from torchvision.models.vision_transformer import EncoderBlock
    return nn.Sequential(*[EncoderBlock(heads, dim, 4 * dim, 0.0, 0.0) for _ in range(depth)])

def time_fb(model, x, repeats, device):
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    def once():
        model.zero_grad(set_to_none=True)
        x_ = x.detach().requires_grad_(True)
        sync(); t = time.perf_counter()
        model(x_).float().pow(2).mean().backward()
        sync(); return time.perf_counter() - t
    once()                                                   # warm-up
    return statistics.median(once() for _ in range(repeats))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sides', type=int, nargs='+', default=[14, 20, 28, 40, 56, 80, 112], help='token grid sides (L = side^2)')
    p.add_argument('--dim', type=int, default=96)
    p.add_argument('--depth', type=int, default=2)
    p.add_argument('--heads', type=int, default=3)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--cap', type=float, default=60.0, help='skip a size whose predicted time (s) passes this')
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', type=Path, default=None, help='png of the two curves')
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    models = {'VSS': vss_stack(a.dim, a.depth).to(dev), 'ViT': vit_stack(a.dim, a.depth, a.heads).to(dev)}
    growth = {'VSS': 1, 'ViT': 2}                         # time ~ L^growth
    print(f"{a.depth} blocks of width {a.dim}, batch {a.batch}, forward+backward, {dev}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rows, last = [], {}
    for side in a.sides:
        L = side * side
        x = torch.randn(a.batch, side, side, a.dim, device=dev)
        row = dict(side=side, L=L)
        for name, m in models.items():
            if name in last:
                (L0, t0) = last[name]
                pred = t0 * (L / L0) ** growth[name]
                if pred > a.cap: row[name] = None; continue
            inp = x if name == 'VSS' else x.reshape(a.batch, L, a.dim)
            try: t = time_fb(m, inp, a.repeats if L <= 3136 else 1, dev)
            except RuntimeError as e:                      # out of memory at the largest sizes
                print(f"  {name} at L={L}: {type(e).__name__}: {str(e)[:80]}"); row[name] = None; continue
            row[name] = t; last[name] = (L, t)
        rows.append(row)
        r = (row['ViT'] / row['VSS']) if row.get('ViT') and row.get('VSS') else None
        print(f"L={L:6d} ({side:3d}^2)  VSS {row['VSS'] or float('nan'):8.3f} s   ViT {row['ViT'] or float('nan'):8.3f} s   "
              f"ViT/VSS {r if r else float('nan'):6.2f}", flush=True)
    def slope(name):
        pts = [(math.log(r['L']), math.log(r[name])) for r in rows if r.get(name)]
        pts = pts[-3:] if len(pts) >= 3 else pts
        if len(pts) < 2: return float('nan')
        mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
        return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    both = [r for r in rows if r.get('VSS') and r.get('ViT')]
    cross = None
    for r0, r1 in zip(both, both[1:]):                   # first interval where ViT/VSS goes through 1 (log-log interpolation)
        q0, q1 = math.log(r0['ViT'] / r0['VSS']), math.log(r1['ViT'] / r1['VSS'])
        if q0 < 0 <= q1:
            f = -q0 / (q1 - q0); cross = round(math.exp(math.log(r0['L']) + f * (math.log(r1['L']) - math.log(r0['L']))))
            break
    if cross is None and both and both[0]['ViT'] >= both[0]['VSS']: cross = f"<= {both[0]['L']} (VSS is already faster at the smallest size)"
    if cross is None: cross = f"> {both[-1]['L'] if both else '?'} (ViT is faster at every size measured)"
    sl = {n: round(slope(n), 2) for n in models}
    print(f"log-log slope over the largest sizes measured: VSS {sl['VSS']}, ViT {sl['ViT']} (1 = linear, 2 = quadratic)")
    print(f"crossover: VSS becomes faster than ViT at L ~ {cross} tokens" if isinstance(cross, int) else f"crossover: L {cross}")
    res = dict(config=vars(a) | dict(out=str(a.out), device=str(dev), threads=torch.get_num_threads(), torch=torch.__version__),
               rows=rows, crossover=cross, slopes=sl)
    jpath = Path(__file__).parent / 'results' / 'bench_vss_vit.json'
    jpath.parent.mkdir(exist_ok=True); jpath.write_text(json.dumps(res, indent=1))
    if a.out:
        import matplotlib; matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for n, mk in (('VSS', 'o-'), ('ViT', 's-')):
            pts = [(r['L'], r[n]) for r in rows if r.get(n)]
            ax.plot(*zip(*pts), mk, label=f"{n} (slope {sl[n]})")
        ax.set(xscale='log', yscale='log', xlabel='tokens L', ylabel='forward + backward (s)',
               title=f"{a.depth} blocks x {a.dim} ch, batch {a.batch}, {dev.type}")
        ax.legend(fontsize=8); ax.grid(alpha=0.3, which='both'); fig.tight_layout()
        a.out.parent.mkdir(parents=True, exist_ok=True); fig.savefig(a.out, dpi=100)
        print(f"wrote {a.out} and {jpath}")

if __name__ == '__main__': main()
