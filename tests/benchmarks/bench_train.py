"""Performance of Mamba-CNN D against torchvision's MobileNetV2: training throughput, inference latency, data loading.

A script, not a test: timings on a shared machine are noisy, so the two models are timed alternately in the same
process, several rounds, and the script prints the median of each and their ratio (the figure that is comparable
across machines). The issue's target: D trains at >= 0.7x MobileNetV2's images/s at the same resolution and batch.

    python tests/benchmarks/bench_train.py                                  # CPU, 128 px, batch 32, SCUT-FBP5500 if present
    python tests/benchmarks/bench_train.py --img-size 224 --device cuda     # on a GPU
    python tests/benchmarks/bench_train.py --quick                          # a smoke run
Data loading reads SCUT-FBP5500 from --root (default ../shared/data/SCUT-FBP5500); without it, a fake release of
350 px JPEGs (the real images' size) is written to a temporary folder.
"""
import argparse, statistics, tempfile, time
from pathlib import Path
import torch
from fbp_nb.models.mamba_cnn import MambaCNN, mobilenet_v2_regressor, train_throughput, count_params, count_flops
from fbp_nb.learner import resolve_device

def latency_ms(model, batch:int, img_size:int, device, reps:int) -> float:
    "Median milliseconds per image for an eval-mode forward pass at batch size `batch`."
    m = model.to(device).eval()
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    times = []
    with torch.inference_mode():
        m(x); sync()
        for _ in range(reps):
            t0 = time.perf_counter(); m(x); sync(); times.append((time.perf_counter() - t0) * 1e3 / batch)
    return statistics.median(times)

def alternate(fns:dict, rounds:int) -> dict:
    "Call each fn in turn for `rounds` rounds; median result per name (alternating spreads machine noise evenly)."
    res = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items(): res[k].append(f())
    return {k: statistics.median(v) for k, v in res.items()}

def data_loading(root, n:int, img_size:int, epochs:int=2) -> dict:
    "Images/s through a DataLoader (resize + augment transform) per epoch: no cache vs the in-memory cache."
    from fbp_nb.data import SCUTFBP5500, beauty_transforms, fake_scut_fbp5500
    if root is None or not Path(root).is_dir():
        root = fake_scut_fbp5500(Path(tempfile.mkdtemp())/'scut', n_per_group=max(5, -(-n // 4 // 5) * 5), size=350)
        print(f'(no SCUT-FBP5500 at the given root: fake 350 px release of JPEGs at {root})')
    out = {}
    for cache in (None, 'memory'):
        ds = SCUTFBP5500(root, '60-40', 'train', transform=beauty_transforms(img_size, train=True),
                         size=round(img_size * 256 / 224), cache=cache)
        sub = torch.utils.data.Subset(ds, range(min(n, len(ds))))
        dl = torch.utils.data.DataLoader(sub, batch_size=32, shuffle=True)
        rates = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            for _ in dl: pass
            rates.append(len(sub) / (time.perf_counter() - t0))
        out['none' if cache is None else cache] = rates
    return out

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--img-size', type=int, default=128)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--device', default='cpu')
    p.add_argument('--rounds', type=int, default=5, help='alternating timing rounds per measurement')
    p.add_argument('--root', default='../shared/data/SCUT-FBP5500')
    p.add_argument('--n-images', type=int, default=320, help='images per data-loading epoch')
    p.add_argument('--quick', action='store_true')
    a = p.parse_args()
    if a.quick: a.img_size, a.batch_size, a.rounds, a.n_images = 64, 8, 2, 40
    dev = resolve_device(a.device)
    torch.manual_seed(0)
    models = {'mamba_cnn_D': MambaCNN('D'), 'mobilenet_v2': mobilenet_v2_regressor()}
    print(f'device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads, {a.img_size} px, batch {a.batch_size}')
    for k, m in models.items():
        print(f'{k:12s} params {count_params(m) / 1e6:.2f} M, {count_flops(m, a.img_size) / 1e9:.3f} GFLOPs at {a.img_size} px')

    tp = alternate({k: (lambda m=m: train_throughput(m, a.batch_size, a.img_size, steps=3, device=dev)) for k, m in models.items()}, a.rounds)
    print(f"\ntraining throughput (images/s, median of {a.rounds}): " + ', '.join(f'{k} {v:.1f}' for k, v in tp.items()))
    r = tp['mamba_cnn_D'] / tp['mobilenet_v2']
    print(f"  ratio D / MobileNetV2 = {r:.2f} (target >= 0.70: {'met' if r >= 0.7 else 'NOT met'})")

    for b in (1, 32):
        reps = 20 if b == 1 else 3
        lat = alternate({k: (lambda m=m: latency_ms(m, b, a.img_size, dev, reps)) for k, m in models.items()}, a.rounds)
        print(f"inference latency, batch {b:2d} (ms/image): " + ', '.join(f'{k} {v:.2f}' for k, v in lat.items())
              + f"; ratio D / MobileNetV2 = {lat['mamba_cnn_D'] / lat['mobilenet_v2']:.2f}")

    dl = data_loading(a.root, a.n_images, a.img_size)
    print(f"\ndata loading ({a.n_images} training images, decode + resize + augment, batch 32, 1 process), images/s per epoch:")
    for k, v in dl.items(): print(f"  cache={k:6s} " + ', '.join(f'epoch {i}: {x:.0f}' for i, x in enumerate(v)))
    print(f"  second epoch, memory cache / no cache = {dl['memory'][-1] / dl['none'][-1]:.1f}x")
