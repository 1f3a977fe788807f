"""Issue 25: the scan backends of chapter 01 (`fbp_nb.scan`) against the independent reference `selective_scan_ref`.

- 'chunked' (the SSD form): float64, outputs, last state and the gradient of every input, every B/C shape and option;
  its dispatched-op count at (2, 8, 3136, 16), forward + backward, <= 600.
- 'triton': the Triton kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1) at small sizes; launches counted.
- 'auto' / backend_for / scan_backends, the one-time warnings, the errors, and import without triton.
- VisionMamba, SS2D and FER-YOLO-Mamba give the same outputs (and gradients) with each backend.
"""
import math, subprocess, sys, warnings
import pytest
import torch
import torch.nn.functional as F
import fbp_nb.scan as S
from fbp_nb.scan import (selective_scan, selective_scan_ref, selective_scan_chunked, selective_scan_triton, segsum,
                         backend_for, scan_backends, OpCounter, has_triton)

SHAPES = ('const', 'var', 'group')

def inputs(b=2, d=4, l=23, n=3, bshape='var', cshape='var', g=2, dtype=torch.float64, seed=0, extras=True):
    "Random inputs (requires_grad): B/C 'const' (d,n), 'var' (b,n,l) or 'group' (b,g,n,l); D, z, delta_bias when extras."
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    shp = dict(const=(d, n), var=(b, n, l), group=(b, g, n, l))
    x = dict(u=r(b, d, l), delta=0.5 * r(b, d, l), A=-torch.exp(0.5 * r(d, n)), B=r(*shp[bshape]), C=r(*shp[cshape]))
    if extras: x.update(D=r(d), z=r(b, d, l), delta_bias=0.1 * r(d))
    return {k: v.to(dtype).requires_grad_() for k, v in x.items()}

def check(fn, x, softplus=True, last=True, rtol=None, atol=None, **kw):
    "fn(**x) against selective_scan_ref: output, last state and the gradient of every input, same upstream gradients."
    res = []
    for f in (fn, selective_scan_ref):
        out = f(**x, delta_softplus=softplus, return_last_state=last, **(kw if f is fn else {}))
        y, h = out if last else (out, None)
        gen = torch.Generator().manual_seed(1)
        gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
        outs, gouts = [y], [gy]
        if last: outs.append(h); gouts.append(torch.randn(h.shape, generator=gen, dtype=torch.float64).to(h.dtype))
        res.append((y, h, torch.autograd.grad(outs, list(x.values()), gouts)))
    (y1, h1, g1), (y2, h2, g2) = res
    tol = {} if rtol is None else dict(rtol=rtol, atol=atol)
    torch.testing.assert_close(y1, y2, **tol)
    if last: torch.testing.assert_close(h1, h2.to(h1.dtype), **tol)
    for k, a, b in zip(x, g1, g2): torch.testing.assert_close(a, b, **tol, msg=lambda m: f'grad of {k}: {m}')

# ---------------------------------------------------------------------------------------------------- chunked (SSD)
def test_segsum_by_hand_and_against_a_loop():
    x = torch.randn(3, 7, dtype=torch.float64)
    S_ = segsum(x)
    for t in range(7):
        for s in range(7):
            want = x[:, s + 1:t + 1].sum(-1) if t >= s else torch.full((3,), -math.inf, dtype=torch.float64)
            torch.testing.assert_close(S_[:, t, s], want)

@pytest.mark.parametrize('bshape', SHAPES)
@pytest.mark.parametrize('cshape', SHAPES)
def test_chunked_all_bc_shapes_float64(bshape, cshape):
    check(selective_scan_chunked, inputs(l=37, bshape=bshape, cshape=cshape), chunk=8)      # 37: not a multiple of 8

@pytest.mark.parametrize('opts', [dict(extras=False), dict(extras=True)])
@pytest.mark.parametrize('softplus', [False, True])
@pytest.mark.parametrize('last', [False, True])
def test_chunked_options(opts, softplus, last):
    x = inputs(**opts)
    if not softplus:
        with torch.no_grad(): x['delta'].abs_()                          # positive step sizes without the softplus
    check(selective_scan_chunked, x, softplus=softplus, last=last, chunk=4)

@pytest.mark.parametrize('chunk', [1, 3, 16, 64, None])
@pytest.mark.parametrize('l', [1, 2, 23])
def test_chunked_chunk_lengths(chunk, l):
    check(selective_scan_chunked, inputs(l=l, bshape='group', cshape='var'), chunk=chunk)

def test_chunked_one_group_with_four_and_public_backend():
    check(selective_scan_chunked, inputs(d=8, bshape='var', cshape='group', g=4), chunk=5)
    check(selective_scan, inputs(d=8, bshape='group', cshape='group', g=4), backend='chunked')

@pytest.mark.parametrize('budget', [1, 40 * 3 * 8, 2 * 40 * 3 * 8 * 2])
def test_chunked_blocks(monkeypatch, budget):
    "A small memory budget splits the work into blocks (per channel, per batch element, several): same numbers."
    monkeypatch.setattr(S, '_SSD_BUDGET', budget)
    x = inputs(l=37, bshape='const', cshape='group')
    assert len(S._ssd_blocks(list(S._ssd_layout(*(v.detach() for v in list(x.values())[:5]), 8)), 8)) > 1
    check(selective_scan_chunked, x, chunk=8)

def test_chunked_gradcheck():
    x = inputs(b=1, d=2, l=9, n=2, bshape='var', cshape='group', g=2)
    fn = lambda *a: selective_scan_chunked(*a, delta_softplus=True, return_last_state=True, chunk=4)
    assert torch.autograd.gradcheck(fn, tuple(x.values()))

@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_chunked_lower_precision(dtype):
    "float32 computes in float32 (tolerance 1e-4); half inputs get a float32 state and their own dtype back (2e-2)."
    x = inputs(dtype=dtype, l=40)
    y, h = selective_scan_chunked(**x, delta_softplus=True, return_last_state=True)
    assert y.dtype == dtype and h.dtype == torch.float32
    y_ref = selective_scan_ref(**{k: v.detach().double() for k, v in x.items()}, delta_softplus=True)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=tol)
    y.float().sum().backward()
    assert x['u'].grad.dtype == dtype and all(torch.isfinite(v.grad.float()).all() for v in x.values())
    if dtype == torch.float32: check(selective_scan_chunked, inputs(dtype=dtype), rtol=1e-4, atol=1e-4)

def test_chunked_strong_decay_long_sequence_float32():
    "Delta*A down to about -300 per step over 2000 steps: e^(Delta A) underflows to 0; nothing overflows or turns NaN."
    x = inputs(b=1, d=3, l=2000, n=4, extras=False, dtype=torch.float32)
    with torch.no_grad(): x['delta'].mul_(4).add_(3); x['A'].mul_(10)
    y, h = selective_scan_chunked(**x, delta_softplus=True, return_last_state=True)
    (y.sum() + h.sum()).backward()
    assert all(torch.isfinite(t).all() for t in (y, h, *(v.grad for v in x.values())))
    xd = {k: v.detach().double() for k, v in x.items()}
    torch.testing.assert_close(y.double(), selective_scan_ref(**xd, delta_softplus=True), rtol=1e-4, atol=1e-4)

def ops(b, d, l, n, **kw):
    "(forward ops, backward ops) through one selective_scan(...).sum() and its backward, as issue 25 counts them."
    gen = torch.Generator().manual_seed(0)
    u, dl, B, C = (torch.randn(*s, generator=gen) for s in ((b, d, l), (b, d, l), (b, n, l), (b, n, l)))
    x = [t.requires_grad_() for t in (u, F.softplus(dl - 2), -torch.arange(1., n + 1).repeat(d, 1), B, C)]
    with OpCounter() as f: s = selective_scan(*x, **kw).sum()
    with OpCounter() as g: s.backward()
    return f.n, g.n

def test_chunked_op_count_acceptance():
    "Issue 25: at (2, 8, 3136, 16) forward + backward <= 600 dispatched ops (the CPU path: ~39,000), and no growth with l."
    long, short = sum(ops(2, 8, 3136, 16, backend='chunked')), sum(ops(2, 8, 196, 16, backend='chunked'))
    assert long <= 600, long
    assert long <= 1.2 * short, (long, short)

def test_sequential_op_count_is_todays():
    "The CPU default is the same path as before issue 25: 850 + 1,683 ops at l = 196 (counted in the issue)."
    f, g = ops(2, 8, 196, 16)
    assert abs(f - 850) <= 2 and abs(g - 1683) <= 2, (f, g)

# ---------------------------------------------------------------------------------------------------- Triton
needs_triton = pytest.mark.skipif(not has_triton(), reason='triton is not installed')
INTERP = S.triton_interpreted()   # TRITON_INTERPRET=1 must be set before triton is imported: see the last test of this part
needs_interp = pytest.mark.skipif(not INTERP, reason='needs TRITON_INTERPRET=1 before Python starts (test_triton_tests_in_a_fresh_interpreter_process runs them)')

def launches(monkeypatch):
    "Count `kernel[grid](...)` launches by wrapping the kernels that TritonScanFn fetches from `_kernels()`."
    n, kernels = [0], S._kernels
    class Counted:
        def __init__(self, k): self.k = k
        def __getitem__(self, grid): n[0] += 1; return self.k[grid]
    monkeypatch.setattr(S, '_kernels', lambda: tuple(Counted(k) for k in kernels()))
    return n

@needs_interp
@pytest.mark.parametrize('bshape', SHAPES)
@pytest.mark.parametrize('cshape', SHAPES)
def test_triton_all_bc_shapes_float64(bshape, cshape):
    check(selective_scan_triton, inputs(l=11, bshape=bshape, cshape=cshape), chunk=4)      # 11: checkpoints every 4 steps

@needs_interp
@pytest.mark.parametrize('extras,softplus,last', [(False, False, False), (True, False, True), (False, True, True)])
def test_triton_options(extras, softplus, last):
    x = inputs(l=9, extras=extras)
    if not softplus:
        with torch.no_grad(): x['delta'].abs_()
    check(selective_scan_triton, x, softplus=softplus, last=last, chunk=3)

@needs_interp
def test_triton_odd_sizes_and_groups():
    "d = 6 in 3 groups of 2 (blocks of 2 channels), n = 5 (padded to 8 lanes), one step, chunk longer than l."
    check(selective_scan_triton, inputs(d=6, n=5, l=7, bshape='group', cshape='var', g=3), chunk=5)
    check(selective_scan_triton, inputs(d=5, n=3, l=1, bshape='var', cshape='const'))
    check(selective_scan_triton, inputs(d=3, l=6, bshape='const', cshape='const'), chunk=64)

@needs_interp
def test_triton_float32_and_half_inputs():
    "float32 accumulation: float32 within 1e-5; bf16/fp16 inputs give their dtype back, within 2e-2 of float64."
    check(selective_scan_triton, inputs(l=10, dtype=torch.float32), rtol=1e-5, atol=1e-5, chunk=4)
    for dt in (torch.bfloat16, torch.float16):
        x = inputs(l=10, dtype=dt)
        y, h = selective_scan_triton(**x, delta_softplus=True, return_last_state=True)
        assert y.dtype == dt and h.dtype == torch.float32
        y_ref = selective_scan_ref(**{k: v.detach().double() for k, v in x.items()}, delta_softplus=True)
        torch.testing.assert_close(y.double(), y_ref, rtol=2e-2, atol=2e-2)
        y.float().sum().backward()
        assert x['u'].grad.dtype == dt and x['B'].grad.dtype == dt and torch.isfinite(x['B'].grad.float()).all()
        ref = {k: v.detach().double().requires_grad_() for k, v in x.items()}
        selective_scan_ref(**ref, delta_softplus=True).sum().backward()
        for k in x: torch.testing.assert_close(x[k].grad.double(), ref[k].grad, rtol=5e-2, atol=5e-2, msg=lambda m: f'{k}: {m}')

@needs_interp
def test_triton_launch_count(monkeypatch):
    """Forward + backward = 2 kernel launches (<= 10, issue 25), the same for every l: the time loop is inside each
    kernel (`for t in range(0, l)`), the grid is (b, ceil(d / BLOCK_D)) and neither depends on l, so the count at
    (2, 8, 3136, 16) is the count at any l. Checked here at two lengths and at (2, 8, l, 16) itself with l small."""
    n = launches(monkeypatch)
    counts = []
    for shape in (dict(b=2, d=8, l=5, n=16), dict(b=2, d=8, l=40, n=16)):
        x = inputs(**shape, extras=True, dtype=torch.float32)
        n[0] = 0
        selective_scan(**x, delta_softplus=True, backend='triton').sum().backward()
        counts.append(n[0])
    assert counts == [2, 2], counts

def strided_check(backend):
    "Non-contiguous inputs (D and delta_bias every other element, B transposed, u a slice) and the expanded (stride-0)"
    "upstream gradients that `y.sum() + h.sum()` hands back: same values and gradients as the reference."
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_()
    b, d, l, n = 2, 4, 10, 3
    leaves = dict(u=r(b, d, 2 * l), delta=r(b, d, l), A=r(d, n), B=r(b, l, n), C=r(b, 2, n, l), D=r(2 * d), z=r(b, d, l), bias=r(2 * d))
    def run(fn):
        L = leaves
        y, h = fn(L['u'][..., ::2], L['delta'], -torch.exp(L['A']), L['B'].transpose(1, 2), L['C'], L['D'][::2], L['z'],
                  L['bias'][1::2], delta_softplus=True, return_last_state=True)
        return (y, h), torch.autograd.grad(y.sum() + h.sum(), list(L.values()))
    (y1, h1), g1 = run(lambda *a, **k: selective_scan(*a, **k, backend=backend))
    (y2, h2), g2 = run(selective_scan_ref)
    torch.testing.assert_close(y1, y2); torch.testing.assert_close(h1, h2)
    for k, a, c in zip(leaves, g1, g2): torch.testing.assert_close(a, c, msg=lambda m: f'{backend} grad of {k}: {m}')

def test_chunked_strided_inputs_and_expanded_gradients():
    strided_check('chunked')
    strided_check('sequential')

@needs_interp
def test_triton_strided_inputs_and_expanded_gradients():
    strided_check('triton')

@needs_triton
def test_triton_needs_cuda_or_interpreter(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    x = {k: v.detach() for k, v in inputs(extras=False).items()}
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'): selective_scan(**x, backend='triton')

@needs_triton
def test_triton_tests_in_a_fresh_interpreter_process():
    "Without a GPU: run this file's Triton tests again in a process that starts with TRITON_INTERPRET=1."
    if INTERP: pytest.skip('already running in the interpreter')
    import os
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', __file__, '-k', 'triton and not fresh'],
                       capture_output=True, text=True, env={**os.environ, 'TRITON_INTERPRET': '1'}, cwd=os.path.dirname(__file__))
    assert r.returncode == 0 and ' passed' in r.stdout and 'skipped' not in r.stdout.splitlines()[-1], r.stdout[-3000:] + r.stderr[-2000:]

def test_triton_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(S, 'triton', None)
    x = {k: v.detach() for k, v in inputs(extras=False).items()}
    with pytest.raises(RuntimeError, match='needs the triton package'): selective_scan(**x, backend='triton')
    assert not S.has_triton() and backend_for('cuda') in ('cuda', 'chunked')

def test_import_without_triton():
    "`import fbp_nb.scan` works where triton cannot be imported, and 'auto' then never picks it."
    code = ("import sys; sys.modules['triton'] = None; sys.modules['triton.language'] = None\n"
            "import fbp_nb.scan as S; assert not S.has_triton(); print(S.backend_for('cuda'), S.scan_backends()['cpu'])")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ['cuda' if S.has_mamba_ssm() else 'chunked', 'sequential']

# ---------------------------------------------------------------------------------------------------- dispatch
def test_backend_for_and_scan_backends(monkeypatch):
    assert backend_for('cpu') == 'sequential' and backend_for(torch.device('mps')) == 'chunked'
    assert scan_backends()['cpu'] == 'sequential'
    monkeypatch.setattr(S, '_mamba_ssm_scan', None)
    assert backend_for('cuda') == ('triton' if has_triton() else 'chunked')
    monkeypatch.setattr(S, 'triton', None)
    assert backend_for('cuda:0') == 'chunked'
    monkeypatch.setattr(S, '_mamba_ssm_scan', object())
    assert backend_for('cuda') == 'cuda' and backend_for('cpu') == 'sequential'

def test_auto_on_cpu_is_the_sequential_path_exactly():
    x = inputs(dtype=torch.float32)
    args = dict(delta_softplus=True, return_last_state=True)
    for a, b in zip(selective_scan(**x, **args), selective_scan(**x, **args, backend='sequential')): assert torch.equal(a, b)
    for a, b in zip(selective_scan(**x, **args), selective_scan(**x, **args, backend='torch')): assert torch.equal(a, b)
    check(selective_scan, inputs(), backend='sequential'); check(selective_scan, inputs(), backend='ref')

def test_unknown_backend_and_bad_chunk():
    x = {k: v.detach() for k, v in inputs(extras=False).items()}
    with pytest.raises(ValueError, match='backend must be one of'): selective_scan(**x, backend='fast')
    with pytest.raises(ValueError, match='chunk must be a positive int'): selective_scan(**x, backend='chunked', chunk=0)
    with pytest.raises(RuntimeError, match='mamba_ssm'): selective_scan(**x, backend='cuda')

def test_auto_warns_once_on_a_gpu_without_mamba_ssm(monkeypatch):
    monkeypatch.setattr(S, '_mamba_ssm_scan', None); monkeypatch.setattr(S, '_WARNED', set())
    for tri, says in ((None, "backend='chunked'"), (object(), "backend='triton'")):
        monkeypatch.setattr(S, 'triton', tri)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            for _ in range(3): S._auto_backend('cuda')
        assert len(w) == 1 and 'mamba_ssm is not installed' in str(w[0].message) and says in str(w[0].message), [str(m.message) for m in w]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); S._auto_backend('cpu')
    assert not w

def test_auto_falls_back_from_a_failing_triton_kernel_with_one_warning(monkeypatch):
    "A Triton that fails to compile (old GPU, missing toolchain) under 'auto': one warning, then the chunked scan."
    monkeypatch.setattr(S, '_WARNED', set()); monkeypatch.setattr(S, '_TRITON_FAILED', [False])
    monkeypatch.setattr(S, '_auto_backend', lambda device: 'triton')
    def broken(*a, **k): raise RuntimeError('no compiler')
    monkeypatch.setattr(S, 'selective_scan_triton', broken)
    x = inputs(dtype=torch.float64)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        y = selective_scan(**x, delta_softplus=True)
        selective_scan(**x, delta_softplus=True)
    assert len(w) == 1 and 'Triton kernel failed' in str(w[0].message) and S._TRITON_FAILED[0]
    torch.testing.assert_close(y, selective_scan_ref(**x, delta_softplus=True))
    with pytest.raises(RuntimeError, match='no compiler'): selective_scan(**x, backend='triton')   # asked for: no fallback

# ---------------------------------------------------------------------------------------------------- models
def outputs_per_backend(make, x, backends=('sequential', 'chunked', 'ref'), call=lambda m, x: m(x)):
    "Build the model once per backend with the same weights; return {backend: (output, input gradient)}."
    torch.manual_seed(0)
    base = make('sequential')
    res = {}
    for be in backends:
        m = make(be).double()
        m.load_state_dict(base.state_dict())
        m.eval()
        xi = x.clone().requires_grad_()
        out = call(m, xi)
        out.pow(2).sum().backward()
        res[be] = (out.detach(), xi.grad)
    return res

def assert_same(res, rtol=1e-9, atol=1e-10):
    "float64: the backends agree to rounding (1e-9 relative)."
    y0, g0 = res['sequential']
    for be, (y, g) in res.items():
        torch.testing.assert_close(y, y0, rtol=rtol, atol=atol, msg=lambda m: f'{be} output: {m}')
        torch.testing.assert_close(g, g0, rtol=rtol, atol=atol, msg=lambda m: f'{be} input gradient: {m}')

def test_vision_mamba_same_outputs_with_each_backend():
    from fbp_nb.models.vmamba import VisionMamba
    for block in ('vss', 'vim'):
        make = lambda be: VisionMamba(depths=(1, 1), dims=8, d_state=2, k=4, block=block, drop_path=0., backend=be)
        assert_same(outputs_per_backend(make, torch.randn(2, 3, 16, 16, dtype=torch.float64)))

def test_ss2d_same_outputs_with_each_backend():
    from fbp_nb.models.vmamba import SS2D
    for k in (2, 4, 8):
        make = lambda be: SS2D(8, d_state=3, k=k, backend=be)
        assert_same(outputs_per_backend(make, torch.randn(2, 5, 6, 8, dtype=torch.float64)))

def test_fer_yolo_mamba_same_outputs_with_each_backend():
    from fbp_nb.models.fer_yolo_mamba import FERYOLOMamba
    make = lambda be: FERYOLOMamba(7, width=0.125, depthwise=True, d_state=2, ssm_ratio=1.0, backend=be)
    res = outputs_per_backend(make, torch.rand(1, 3, 64, 64, dtype=torch.float64), backends=('sequential', 'chunked'),
                              call=lambda m, x: m.raw(x)[0])          # (b, anchors, 5 + classes) decoded predictions
    assert_same(res)
    from fbp_nb.models import create_model
    assert all(m.backend == 'chunked' for m in create_model('fer_yolo_mamba_nano', backend='chunked').modules() if hasattr(m, 'backend'))

@needs_interp
def test_ss2d_with_triton_in_the_interpreter():
    from fbp_nb.models.vmamba import SS2D
    make = lambda be: SS2D(4, d_state=2, k=4, backend=be)
    assert_same(outputs_per_backend(make, torch.randn(1, 3, 3, 4, dtype=torch.float64), backends=('sequential', 'triton')))
