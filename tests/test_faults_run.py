"""Run folders are never silently replaced: a finished or interrupted run in `--out` is refused (unless --resume or
--overwrite), one writer per folder (a lock file naming the process), and a replaced run leaves nothing of the old one
beside the new config."""
import hashlib, os, shutil, socket, subprocess, sys, time
import pytest
from fbp_nb.train import RunConfig, run, read_run, stored_config, RunLock

TINY = ['--n-train', '48', '--n-val', '16', '--n-test', '16', '--img-size', '32', '--width-mult', '0.25', '--epochs', '1',
        '--device', 'cpu', '--no-progress']

def fbp_train(*args, timeout=600):
    exe = shutil.which('fbp_train', path=os.path.dirname(sys.executable)) or shutil.which('fbp_train')
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)

def digest(folder) -> dict: return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp('runs') / 'r'
    r = fbp_train(*TINY, '--out', str(out))
    assert r.returncode == 0, r.stderr
    return out

def test_a_finished_run_is_not_replaced(finished):
    before = digest(finished)
    r = fbp_train(*TINY, '--seed', '1', '--out', str(finished))
    assert r.returncode == 2 and f'fbp_train: error: --out {finished}: holds a finished run' in r.stderr and '--overwrite' in r.stderr, r.stderr
    assert digest(finished) == before                                    # byte-identical: nothing was written

def test_overwrite_replaces_the_whole_run(finished, tmp_path):
    out = tmp_path / 'copy'; shutil.copytree(finished, out)
    r = fbp_train(*TINY, '--seed', '1', '--out', str(out), '--overwrite')
    assert r.returncode == 0, r.stderr
    ck = read_run(out / 'model.pt')
    assert stored_config(ck['config']).seed == 1 == RunConfig.from_json(out / 'config.json').seed   # model.pt and config.json agree
    assert not (out / '.lock').exists()

def test_an_interrupted_run_is_continued_not_restarted(finished, tmp_path):
    out = tmp_path / 'half'; out.mkdir()
    shutil.copy(finished / 'last.pt', out / 'last.pt')                   # a run killed after its first epoch: last.pt only
    r = fbp_train(*TINY, '--out', str(out))
    assert r.returncode == 2 and 'holds an interrupted run (last.pt); continue it with --resume ' in r.stderr, r.stderr
    r = fbp_train('--resume', str(out / 'last.pt'), '--epochs', '2', '--no-progress')
    assert r.returncode == 0, r.stderr
    assert (out / 'model.pt').is_file() and stored_config(read_run(out)['config']).epochs == 2

def test_a_second_writer_is_refused(finished, tmp_path):
    out = tmp_path / 'busy'; out.mkdir()
    with RunLock(out):                                                    # this process writes the folder
        r = fbp_train(*TINY, '--out', str(out))
    assert r.returncode == 2 and f'another run is writing this folder (process {os.getpid()} on {socket.gethostname()}' in r.stderr, r.stderr
    assert sorted(p.name for p in out.iterdir()) == []                   # the refused run wrote nothing
    (out / '.lock').write_text(f'999999999 {socket.gethostname()}\n')    # a lock left by a process that died is taken over
    r = fbp_train(*TINY, '--out', str(out))
    assert r.returncode == 0, r.stderr
    assert not (out / '.lock').exists()

def test_two_concurrent_runs_into_one_folder(tmp_path):
    "Started together: one completes, the other is refused with one sentence; the folder holds one consistent run."
    out = tmp_path / 'race'
    exe = shutil.which('fbp_train', path=os.path.dirname(sys.executable)) or shutil.which('fbp_train')
    procs = [subprocess.Popen([exe, *TINY, '--seed', str(s), '--out', str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in (0, 1)]
    res = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in res)
    assert codes == [0, 2], res
    err = next(e for rc, e in res if rc == 2)
    assert 'another run is writing this folder' in err or 'holds a finished run' in err, err
    seed = next(s for (rc, _), s in zip(res, (0, 1)) if rc == 0)
    assert stored_config(read_run(out)['config']).seed == seed == RunConfig.from_json(out / 'config.json').seed

def test_a_killed_rerun_leaves_no_disagreeing_files(finished, tmp_path):
    "--overwrite removes the old run's files before the new config is written: killed at any moment, the folder never pairs the old model.pt with the new config.json."
    out = tmp_path / 'killed'; shutil.copytree(finished, out)
    exe = shutil.which('fbp_train', path=os.path.dirname(sys.executable)) or shutil.which('fbp_train')
    p = subprocess.Popen([exe, *TINY, '--epochs', '3', '--seed', '7', '--out', str(out), '--overwrite'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    def new_config():
        try: return RunConfig.from_json(out / 'config.json').seed == 7
        except (OSError, ValueError): return False                          # not there, or being written
    while not new_config():
        assert time.time() - t0 < 300, 'the new config.json never appeared'
        assert p.poll() is None, 'the run ended before it could be killed'
        time.sleep(0.05)
    p.kill(); p.wait()
    assert RunConfig.from_json(out / 'config.json').seed == 7
    assert not (out / 'model.pt').exists() and not (out / 'metrics.json').exists()      # the old results are gone, none new yet
    if (out / 'last.pt').exists(): assert stored_config(read_run(out / 'last.pt', resume=True)['config']).seed == 7
