"""The `fbp` console command, run as a user runs it: a separate process through the installed entry point."""
import os, re, shutil, subprocess, sys
import pytest

def fbp(*args, timeout=600):
    exe = shutil.which('fbp', path=os.path.dirname(sys.executable)) or shutil.which('fbp')
    assert exe, 'the `fbp` console script is not installed: pip install -e ".[dev]"'
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)

def test_help():
    r = fbp('--help')
    assert r.returncode == 0, r.stderr
    for word in ('info', 'demo'): assert word in r.stdout
    r = fbp('demo', '--help')
    assert r.returncode == 0 and '--steps' in r.stdout and '--device' in r.stdout

def test_version_and_info():
    import fbp_nb
    r = fbp('--version')
    assert r.returncode == 0 and fbp_nb.__version__ in r.stdout
    r = fbp('info')
    assert r.returncode == 0, r.stderr
    assert re.search(r'^torch\s+\S+', r.stdout, flags=re.M) and 'mamba_ssm_kernel' in r.stdout

def test_demo_short_run():
    r = fbp('demo', '--steps', '40', '--no-progress', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r'selective_acc=(\d\.\d{3}) lti_acc=(\d\.\d{3})', last)
    assert m, last
    assert all(0 <= float(v) <= 1 for v in m.groups())

def test_bad_options():
    r = fbp('demo', '--bogus')
    assert r.returncode == 2 and 'unrecognized arguments: --bogus' in r.stderr
    r = fbp('demo', '--steps', '0')
    assert r.returncode == 2 and '--steps must be >= 1' in r.stderr
    r = fbp('demo', '--steps', 'ten')
    assert r.returncode == 2 and 'invalid int value' in r.stderr

def test_cuda_request_without_gpu():
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    r = fbp('demo', '--steps', '1', '--device', 'cuda')
    assert r.returncode == 2 and 'no usable CUDA GPU' in r.stderr
