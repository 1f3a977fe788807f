"""Issue 25's benchmark: every `selective_scan` backend on this machine, in one process, and the CPU default against a
frozen copy of the code it had before issue 25 (so "the default keeps its speed" is measured side by side).

Prints, per backend and size (forward + backward, float32, time-varying B and C as in a Mamba layer):
  - CPU time (min of --reps runs; the old and new default paths interleaved run by run),
  - dispatched operations (a TorchDispatchMode: on a GPU each is a kernel launch) and Triton kernel launches,
  - peak memory added by one forward + backward (a fresh child process per run: VmHWM on Linux; on CUDA
    torch.cuda.max_memory_allocated),
  - the ratio new default / old default on the scan-speed table's shapes (tests/benchmarks/bench_scan.py).
A GPU section runs when CUDA is present (mamba_ssm and Triton rows when importable).

    OMP_NUM_THREADS=1 python tests/benchmarks/scan_backends.py            # the full run (a few minutes on 2 cores)
    python tests/benchmarks/scan_backends.py --quick                      # small shapes
    TRITON_INTERPRET=1 python tests/benchmarks/scan_backends.py --quick   # + Triton launch counts in the interpreter
"""
import argparse, json, math, os, subprocess, sys, time
import torch
import torch.nn.functional as F
from torch import Tensor
from fbp_nb.scan import selective_scan, OpCounter, has_triton, triton_interpreted, scan_backends
import fbp_nb.scan as S

SPEED_SHAPES = [(2, 192, 3136, 16), (8, 384, 196, 16)]       # the scan-speed table of bench_scan.py
OPS_SHAPES = [(2, 8, 196, 16), (2, 8, 3136, 16)]             # issue 25's op-count sizes
QUICK_SPEED, QUICK_OPS = [(2, 32, 512, 16), (4, 64, 64, 16)], [(2, 8, 196, 16)]

# ------------------------------------------------------------------------------------------------------------------
# The CPU path exactly as fbp_nb.scan had it before issue 25 (commit 453a75f), kept here as the reference.
# ------------------------------------------------------------------------------------------------------------------
def _tm(x:Tensor) -> Tensor:
    "Move the last (time) axis to the front and make the result contiguous: (..., l) -> (l, ...)."
    return x.movedim(-1, 0).contiguous()

def _bc_layout(M:Tensor, G:int, dg:int) -> tuple[Tensor, bool]:
    "B or C in the internal broadcast layout: (G,dg,n) if time-invariant, else time-major (l,b,g,1,n)."
    if M.dim() == 2: return M.reshape(G, dg, M.shape[-1]), False
    if M.dim() == 3: return _tm(M)[:, :, None, None, :], True      # (b,n,l) -> (l,b,1,1,n)
    return _tm(M)[:, :, :, None, :], True                           # (b,g,n,l) -> (l,b,g,1,n)

def _default_chunk(b:int, d:int, n:int, l:int, device) -> int:
    "Chunk length: ~1M state elements per chunk on CPU (cache-sized), larger on GPU (fewer launches)."
    per_step = max(1, b * d * n)
    if torch.device(device).type == 'cpu':
        T = 2 ** max(0, int(math.log2(max(1, (1 << 20) // per_step))))
        return int(min(max(T, 8), 256, max(l, 1)))
    return int(min(max((1 << 26) // per_step, 16), max(l, 1)))

class SelectiveScanFn(torch.autograd.Function):
    "Chunked selective-scan core (no D, z or softplus) with an analytic, recomputing backward."
    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk:int):
        # u, delta: (b, d, l); A: (d, n); B, C: (d, n) | (b, n, l) | (b, g, n, l)   (all one float dtype)
        b, d, l = u.shape
        n = A.shape[1]
        G = max([M.shape[1] for M in (B, C) if M.dim() == 4], default=1)
        dg = d // G
        ut, dt = _tm(u).view(l, b, G, dg), _tm(delta).view(l, b, G, dg)   # (l, b, G, dg)
        Ag = A.reshape(G, dg, n)
        Bt, Bvar = _bc_layout(B, G, dg)
        Ct, Cvar = _bc_layout(C, G, dg)
        y = u.new_empty(l, b, G, dg)
        nc = math.ceil(l / chunk)
        hs = u.new_empty(nc, b, G, dg, n)                     # state entering each chunk
        h = u.new_zeros(b, G, dg, n)
        H = u.new_empty(min(chunk, l) + 1, b, G, dg, n)      # states of one chunk, H[0] = incoming state
        for c in range(nc):
            t0, t1 = c * chunk, min(l, (c + 1) * chunk)
            T = t1 - t0
            hs[c] = h
            dA = torch.exp(dt[t0:t1, ..., None] * Ag)                        # (T, b, G, dg, n)
            Hc = H[:T + 1]
            torch.mul((dt[t0:t1] * ut[t0:t1])[..., None], Bt[t0:t1] if Bvar else Bt, out=Hc[1:])  # dBu
            Hc[0] = h
            for t in range(T): Hc[t + 1].addcmul_(dA[t], Hc[t])          # h_t = a_t h_{t-1} + dBu_t
            if Cvar: y[t0:t1] = torch.matmul(Hc[1:], Ct[t0:t1].transpose(-1, -2)).squeeze(-1)  # <h_t, C_t>
            else: torch.sum(Hc[1:] * Ct, -1, out=y[t0:t1])
            h = Hc[T].clone()
        ctx.save_for_backward(ut, dt, Ag, B, C, hs)
        ctx.chunk, ctx.shape = chunk, (b, d, l, n, G, dg)
        ctx.set_materialize_grads(False)
        return y.view(l, b, d).permute(1, 2, 0), h.view(b, d, n)

    @staticmethod
    def backward(ctx, dy, dh_last):
        ut, dt, Ag, B, C, hs = ctx.saved_tensors
        chunk, (b, d, l, n, G, dg) = ctx.chunk, ctx.shape
        Bt, Bvar = _bc_layout(B, G, dg)
        Ct, Cvar = _bc_layout(C, G, dg)
        dyt = _tm(dy).view(l, b, G, dg) if dy is not None else ut.new_zeros(l, b, G, dg)
        du, ddt = torch.empty_like(ut), torch.empty_like(ut)
        dA = torch.zeros_like(Ag)
        dBt = torch.empty(l, b, G, 1, n, dtype=ut.dtype, device=ut.device) if Bvar else torch.zeros_like(Bt)
        dCt = torch.empty(l, b, G, 1, n, dtype=ut.dtype, device=ut.device) if Cvar else torch.zeros_like(Ct)
        g = dh_last.view(b, G, dg, n).to(ut.dtype).clone() if dh_last is not None else ut.new_zeros(b, G, dg, n)
        H = ut.new_empty(min(chunk, l) + 1, b, G, dg, n)
        Gb = ut.new_empty(min(chunk, l), b, G, dg, n)
        for c in reversed(range(hs.shape[0])):
            t0, t1 = c * chunk, min(l, (c + 1) * chunk)
            T = t1 - t0
            a = torch.exp(dt[t0:t1, ..., None] * Ag)                          # (T, b, G, dg, n)
            dtu = dt[t0:t1] * ut[t0:t1]                                       # (T, b, G, dg)
            Hc, Gc = H[:T + 1], Gb[:T]
            torch.mul(dtu[..., None], Bt[t0:t1] if Bvar else Bt, out=Hc[1:])  # recompute the chunk's states
            Hc[0] = hs[c]
            for t in range(T): Hc[t + 1].addcmul_(a[t], Hc[t])
            torch.mul(dyt[t0:t1, ..., None], Ct[t0:t1] if Cvar else Ct, out=Gc)  # dL/dy_t * C_t
            Gc[T - 1] += g                                                    # + what flows in from the future
            for t in range(T - 2, -1, -1): Gc[t].addcmul_(a[t + 1], Gc[t + 1])  # reverse scan: g_t
            g = Gc[0] * a[0]                                                  # dL/dh entering this chunk
            if Cvar: dCt[t0:t1] = torch.matmul(dyt[t0:t1, ..., None, :], Hc[1:])        # sum_d dy h
            else: dCt += torch.einsum('tbgd,tbgdn->gdn', dyt[t0:t1], Hc[1:])
            if Bvar:
                gB = torch.matmul(Gc, Bt[t0:t1].transpose(-1, -2)).squeeze(-1)         # sum_n g B   (T,b,G,dg)
                dBt[t0:t1] = torch.matmul(dtu[..., None, :], Gc)                         # sum_d g dt u
            else:
                gB = (Gc * Bt).sum(-1)
                dBt += torch.einsum('tbgd,tbgdn->gdn', dtu, Gc)
            W = Gc.mul_(a).mul_(Hc[:T])                                       # g_t a_t h_{t-1}  (in place)
            dA += torch.einsum('tbgd,tbgdn->gdn', dt[t0:t1], W)
            torch.addcmul((W * Ag).sum(-1), gB, ut[t0:t1], out=ddt[t0:t1])
            torch.mul(gB, dt[t0:t1], out=du[t0:t1])
        back = lambda x: x.view(l, b, d).permute(1, 2, 0)
        def bc_grad(dM, M, var):
            if not var: return dM.reshape(M.shape)
            dM = dM.squeeze(3)                                                # (l, b, G, n)
            if M.dim() == 3: return dM.sum(2).permute(1, 2, 0)               # (b, n, l)
            return dM.permute(1, 2, 3, 0)                                     # (b, g, n, l)
        return back(du), back(ddt), dA.view(d, n), bc_grad(dBt, B, Bvar), bc_grad(dCt, C, Cvar), None

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

def _check_scan_inputs(u, delta, A, B, C, D, z, delta_bias):
    "Raise a clear error, naming the argument, for any input `selective_scan` cannot handle."
    named = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    for k, x in named.items():
        if x is None: continue
        if not isinstance(x, Tensor): raise TypeError(f"{k} must be a torch.Tensor, got {type(x).__name__}")
        if x.is_complex(): raise TypeError(f"{k}: complex tensors are not supported (use a real, negative A)")
        if x.dtype not in _FLOATS: raise TypeError(f"{k} has dtype {x.dtype}; supported: float16, bfloat16, float32, float64")
        if x.device != u.device: raise ValueError(f"{k} is on {x.device} but u is on {u.device}")
    if u.dim() != 3: raise ValueError(f"u must have shape (batch, dim, seqlen), got {tuple(u.shape)}")
    b, d, l = u.shape
    if delta.shape != u.shape: raise ValueError(f"delta must have the shape of u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d: raise ValueError(f"A must have shape (dim={d}, dstate), got {tuple(A.shape)}")
    n = A.shape[1]
    for k, M in (('B', B), ('C', C)):
        ok = (M.dim() == 2 and M.shape == (d, n)) or (M.dim() == 3 and M.shape == (b, n, l)) or \
             (M.dim() == 4 and M.shape[0] == b and M.shape[2:] == (n, l) and M.shape[1] > 0 and d % M.shape[1] == 0)
        if not ok: raise ValueError(f"{k} must have shape ({d}, {n}), ({b}, {n}, {l}) or ({b}, g, {n}, {l}) with g dividing {d}; got {tuple(M.shape)}")
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1]:
        raise ValueError(f"B and C must have the same number of groups, got {B.shape[1]} and {C.shape[1]}")
    if D is not None and D.shape != (d,): raise ValueError(f"D must have shape ({d},), got {tuple(D.shape)}")
    if z is not None and z.shape != u.shape: raise ValueError(f"z must have the shape of u {tuple(u.shape)}, got {tuple(z.shape)}")
    if delta_bias is not None and delta_bias.shape != (d,): raise ValueError(f"delta_bias must have shape ({d},), got {tuple(delta_bias.shape)}")
    if bool((A > 0).any()): raise ValueError("A must be real and negative (A = -exp(A_log)); a positive entry makes the state blow up")
    if not bool(torch.isfinite(delta).all()): raise ValueError("delta contains NaN or inf")
    if not bool(torch.isfinite(u).all()): raise ValueError("u contains NaN or inf")

try:   # optional compiled kernel; importing fbp_nb never depends on it
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_ssm_scan
except Exception:  # ImportError, or a broken CUDA build
    _mamba_ssm_scan = None

def has_mamba_ssm() -> bool:
    "True when the compiled `mamba_ssm` selective-scan kernel can be imported."
    return _mamba_ssm_scan is not None

def selective_scan_before(u:Tensor,  # (b, d, l) input
                   delta:Tensor,  # (b, d, l) step sizes (before bias/softplus)
                   A:Tensor,  # (d, n) real, negative
                   B:Tensor,  # (d, n), (b, n, l) or (b, g, n, l)
                   C:Tensor,  # (d, n), (b, n, l) or (b, g, n, l)
                   D:Tensor|None=None,  # (d,) skip connection
                   z:Tensor|None=None,  # (b, d, l) gate: out = y * silu(z)
                   delta_bias:Tensor|None=None,  # (d,) added to delta
                   delta_softplus:bool=False,  # delta = softplus(delta + delta_bias)
                   return_last_state:bool=False,  # also return the final state (b, d, n), float32 or float64
                   *, backend:str='auto',  # 'auto' | 'torch' | 'cuda' | 'ref'
                   chunk:int|None=None,  # chunk length of the torch backend (None: sized to the cache / GPU)
                   check:bool=True):  # validate inputs (shapes, dtypes, A < 0, finite delta and u)
    "Selective scan (Mamba S6), drop-in for `mamba_ssm`'s `selective_scan_fn`: out, or (out, last_state)."
    if backend not in ('auto', 'torch', 'cuda', 'ref'): raise ValueError(f"backend must be 'auto', 'torch', 'cuda' or 'ref', got {backend!r}")
    if check: _check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    if backend == 'cuda' and not (has_mamba_ssm() and u.is_cuda):
        raise RuntimeError("backend='cuda' needs the mamba_ssm package (pip install mamba-ssm) and CUDA tensors; use backend='torch'")
    if backend == 'cuda' or (backend == 'auto' and has_mamba_ssm() and u.is_cuda):
        return _mamba_ssm_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == 'ref':
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if chunk is not None and chunk < 1: raise ValueError(f"chunk must be a positive int, got {chunk}")
    dtype_in = u.dtype
    ct = torch.float64 if torch.float64 in (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype) else torch.float32
    u_, A_, B_, C_ = (x.to(ct) for x in (u, A, B, C))
    delta_ = delta.to(ct)
    if delta_bias is not None: delta_ = delta_ + delta_bias.to(ct)[:, None]
    if delta_softplus: delta_ = F.softplus(delta_)
    T = chunk or _default_chunk(*u.shape[:2], A.shape[1], u.shape[2], u.device)
    y, last = SelectiveScanFn.apply(u_, delta_, A_, B_, C_, T)
    if D is not None: y = y + u_ * D.to(ct)[:, None]
    if z is not None: y = y * F.silu(z.to(ct))
    y = y.to(dtype_in)
    return (y, last) if return_last_state else y

# ------------------------------------------------------------------------------------------------------------------
def make(b, d, l, n, device='cpu', seed=0):
    "Mamba-like inputs: softplus step sizes, S4D-real A, time-varying B and C; all require grad."
    g = torch.Generator().manual_seed(seed)
    u, dl = torch.randn(b, d, l, generator=g), torch.randn(b, d, l, generator=g)
    B, C = torch.randn(b, n, l, generator=g), torch.randn(b, n, l, generator=g)
    x = [u, F.softplus(dl - 2), -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1), B, C]
    return [t.to(device).requires_grad_() for t in x]

def step(impl, x):
    "One forward + backward of implementation `impl` ('before' or a backend name) on inputs x."
    if impl == 'before': y = selective_scan_before(*x, backend='torch')
    else: y = selective_scan(*x, backend=impl)
    y.sum().backward()

def sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()

def timed(impl, x, device):
    sync(device); t = time.perf_counter(); step(impl, x); sync(device)
    return time.perf_counter() - t

def interleaved(impls, x, device, reps):
    "min time of each impl over reps rounds, the impls alternating within each round (same machine load for all)."
    for i in impls: step(i, x)                                        # warm up
    best = {i: math.inf for i in impls}
    for r in range(reps):
        for i in (impls if r % 2 == 0 else impls[::-1]): best[i] = min(best[i], timed(i, x, device))
    return best

def count(impl, shape, device='cpu'):
    "(dispatched ops, Triton launches) of one forward + backward."
    x = make(*shape, device=device)
    n, kernels = [0], S._kernels
    class Counted:
        def __init__(self, k): self.k = k
        def __getitem__(self, grid): n[0] += 1; return self.k[grid]
    S._kernels = lambda: tuple(Counted(k) for k in kernels())
    try:
        with OpCounter() as c: step(impl, x)
    finally: S._kernels = kernels
    return c.n, n[0]

def _status_kb(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'): return int(line.split()[1])

def child(impl, shape, device):
    x = make(*shape, device=device)
    step(impl, x); x = make(*shape, device=device)                   # warm up (allocator, lazy inits) outside the peak
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        step(impl, x); torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
    else:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        base = _status_kb('VmRSS'); step(impl, x); peak = (_status_kb('VmHWM') - base) * 1024
    print(json.dumps({'peak_mb': peak / 2**20}))

def peak_mb(impl, shape, device):
    if device == 'cpu' and not os.path.exists('/proc/self/clear_refs'): return float('nan')
    r = subprocess.run([sys.executable, __file__, '--child', impl, ','.join(map(str, shape)), device], capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])['peak_mb'] if r.returncode == 0 else float('nan')

def section(device, backends, speed_shapes, ops_shapes, reps, mem):
    print(f'\n=== {device}: backends {backends}  (auto picks {S.backend_for(device)!r})')
    print('\n-- dispatched ops, forward + backward (Triton launches in brackets)')
    for shape in ops_shapes:
        cells = []
        for be in ['before'] + backends:
            if be == 'triton' and device == 'cpu' and not triton_interpreted(): continue
            if be == 'ref' and shape[2] > 1000: continue
            ops, launches = count(be, shape, device)
            cells.append(f'{be} {ops:,}' + (f' [{launches} launches]' if be == 'triton' else ''))
        print(f'  {str(shape):>20}: ' + ', '.join(cells))
    print('\n-- time per forward + backward, ms (min of %d)' % reps + (', peak memory added, MB' if mem else ''))
    for shape in speed_shapes:
        impls = ['before', 'sequential'] + [be for be in backends if be not in ('sequential', 'ref', 'triton') or
                                           (be == 'triton' and device != 'cpu')]
        if device == 'cpu': impls = [i for i in impls if i != 'chunked' or math.prod(shape) <= 2 * 8 * 3136 * 16 * 4]
        t = interleaved(impls, make(*shape, device=device), device, reps)
        row = ', '.join(f'{i} {t[i] * 1e3:.1f}' for i in impls)
        if mem: row += ' | ' + ', '.join(f'{i} {peak_mb(i, shape, device):.0f} MB' for i in impls)
        print(f'  {str(shape):>20}: {row}')
        print(f'  {"":>20}  new default ({S.backend_for(device)}) / before = {t[S.backend_for(device) if S.backend_for(device) in t else "sequential"] / t["before"]:.3f}')

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='small shapes (smoke run)')
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--no-mem', action='store_true', help='skip the peak-memory child processes')
    p.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        impl, shape, device = a.child
        return child(impl, tuple(int(s) for s in shape.split(',')), device)
    print(f'torch {torch.__version__}, threads {torch.get_num_threads()}, triton {"yes" if has_triton() else "no"}'
          f'{" (interpreter)" if triton_interpreted() else ""}, mamba_ssm {"yes" if S.has_mamba_ssm() else "no"}; auto: {scan_backends()}')
    speed, ops = (QUICK_SPEED, QUICK_OPS) if a.quick else (SPEED_SHAPES, OPS_SHAPES)
    cpu_speed = speed + [(2, 8, 3136, 16)] if not a.quick else speed
    section('cpu', ['sequential', 'chunked', 'triton', 'ref'], cpu_speed, ops, a.reps, not a.no_mem)
    if torch.cuda.is_available():
        gpu = ['sequential', 'chunked'] + (['triton'] if has_triton() else []) + (['cuda'] if S.has_mamba_ssm() else [])
        section('cuda', gpu, speed + [(2, 8, 3136, 16)], ops, a.reps, not a.no_mem)
    else: print('\n=== cuda: no GPU here, GPU section skipped')

if __name__ == '__main__':
    main()
