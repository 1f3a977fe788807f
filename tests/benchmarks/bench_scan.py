"""Benchmark `fbp_nb.scan.selective_scan` against autograd through the sequential reference, our own parallel
(Blelloch) scan `selective_scan_parallel` (autograd backward) and mamba.py's pscan.

A script, not a test: timings on a shared machine are noisy, so every figure is printed next to a reference run
in the same process, as a ratio. Peak memory is measured in a fresh child process per run (peak resident memory, VmHWM, on CPU/Linux,
`torch.cuda.max_memory_allocated` on CUDA).

    python tests/benchmarks/bench_scan.py             # both shapes, CPU (and CUDA when present)
    python tests/benchmarks/bench_scan.py --quick     # small shapes, a smoke run
The peer needs `pip install mambapy` (a benchmark-only dependency, never a runtime one); without it its rows are skipped.
"""
import argparse, json, subprocess, sys, time
import torch

SHAPES = [(2, 192, 3136, 16), (8, 384, 196, 16)]
QUICK = [(2, 32, 256, 16), (4, 64, 64, 16)]

def make(b, d, l, n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, l, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(b, d, l, generator=g) - 2)   # Mamba-like step sizes
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)                   # S4D-real init
    B, C = torch.randn(b, n, l, generator=g), torch.randn(b, n, l, generator=g)
    return [t.to(device).requires_grad_() for t in (u, delta, A, B, C)]

def runner(impl, x, backward=True):
    "Return a callable doing one forward (+ backward) of implementation `impl` on inputs `x`."
    from fbp_nb.scan import selective_scan, selective_scan_ref, selective_scan_parallel
    u, delta, A, B, C = x
    if impl == 'fast': f = lambda: selective_scan(u, delta, A, B, C, backend='torch')
    elif impl == 'ref': f = lambda: selective_scan_ref(u, delta, A, B, C)
    elif impl == 'parallel': f = lambda: selective_scan_parallel(u, delta, A, B, C)   # Blelloch scan over time
    elif impl == 'mambapy':
        from mambapy.pscan import pscan
        # mamba.py works in (b, l, d) layout: give it its native layout, prepared outside the timed region
        ut, dt, Bt, Ct = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (u, delta, B, C))
        def f():
            dA = torch.exp(dt.unsqueeze(-1) * A)
            BX = dt.unsqueeze(-1) * Bt.unsqueeze(2) * ut.unsqueeze(-1)
            return (pscan(dA, BX) @ Ct.unsqueeze(-1)).squeeze(3)
    else: raise ValueError(impl)
    if not backward:
        def g():
            with torch.no_grad(): return f()
        return g
    return lambda: f().sum().backward()

def sync(device):
    if device == 'cuda': torch.cuda.synchronize()

def timeit(fn, device, reps, warmup=True):
    if warmup: fn(); sync(device)
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); sync(device); ts.append(time.perf_counter() - t)
    return min(ts)

def _status_kb(key):
    "A field of /proc/self/status, in kB."
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'): return int(line.split()[1])

def child(impl, shape, device):
    "Run once in this (fresh) process and report the peak memory the run added, in MB."
    x = make(*shape, device)
    fn = runner(impl, x)
    if device == 'cuda':
        torch.cuda.synchronize(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        fn(); torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
    else:   # reset the kernel's high-water mark of resident memory, then read it back after the run (Linux)
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        base = _status_kb('VmRSS')
        fn(); peak = (_status_kb('VmHWM') - base) * 1024
    print(json.dumps({'peak_mb': peak / 2**20}))

def peak_mb(impl, shape, device):
    out = subprocess.run([sys.executable, __file__, '--child', impl, ','.join(map(str, shape)), device],
                         capture_output=True, text=True)
    if out.returncode: return float('nan')
    return json.loads(out.stdout.strip().splitlines()[-1])['peak_mb']

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='small shapes (smoke run)')
    p.add_argument('--reps', type=int, default=3, help='timed repetitions of the fast paths (min is reported)')
    p.add_argument('--no-ref', action='store_true', help='skip the (slow) autograd-through-loop reference')
    p.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        impl, shape, device = a.child
        return child(impl, tuple(int(s) for s in shape.split(',')), device)
    try: import mambapy  # noqa: F401
    except ImportError: mambapy = None; print('mambapy not installed (pip install mambapy): peer rows skipped')
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    print(f'torch {torch.__version__}, threads {torch.get_num_threads()}, devices {devices}')
    for device in devices:
        for shape in (QUICK if a.quick else SHAPES):
            x = make(*shape, device)
            print(f'\n== {device} (b, d, l, n) = {shape}, float32, forward + backward')
            t_fast = timeit(runner('fast', x), device, a.reps)
            row = {'fast': t_fast, 'parallel': timeit(runner('parallel', x), device, a.reps)}
            if mambapy: row['mambapy'] = timeit(runner('mambapy', x), device, a.reps)
            if not a.no_ref: row['ref'] = timeit(runner('ref', x), device, 1, warmup=False)   # one run: it is slow
            for k, t in row.items():
                print(f'  {k:8s} {t*1e3:10.1f} ms   ({t / t_fast:6.1f} x the fast scan)')
            if 'ref' in row: print(f'  speed-up over autograd through the loop: {row["ref"] / t_fast:.0f}x'
                                   + (f' (mambapy: {row["ref"] / row["mambapy"]:.0f}x)' if mambapy else ''))
            f_fast = timeit(runner('fast', x, backward=False), device, a.reps)
            f_ref = timeit(runner('ref', x, backward=False), device, 2)
            print(f'  forward only: fast {f_fast*1e3:.1f} ms, reference loop {f_ref*1e3:.1f} ms  (fast / ref = {f_fast / f_ref:.3f})')
            mem = {k: peak_mb(k, shape, device) for k in (['fast', 'parallel'] + (['mambapy'] if mambapy else []))}
            print('  peak memory added by one forward+backward: ' + ', '.join(f'{k} {v:.0f} MB' for k, v in mem.items()))

if __name__ == '__main__':
    main()
