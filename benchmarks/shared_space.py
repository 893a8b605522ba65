"""NeuralDiffuser's single-trial loader and shared-space training speed (issue 23).

1. Loader. Writes a format-faithful set of betas files for one real-sized subject: 40 sessions x 750 trials of int16
   betas (NSD's `betas_sessionNN.hdf5`, dataset `betas`, trials x Z x Y x X) on a 24 x 26 x 28 grid whose ROI mask
   holds 15,724 voxels (subject 1's nsdgeneral count): 30,000 x 15,724 int16 inside the mask, about 1 GB on disk under
   a temp dir, deleted afterwards. Then, in fresh subprocesses, side by side and alternating (each twice):
   - `neurodecode.trials.read_trials(paths, mask, lengths, zscore=...)`: the float32 30,000 x 15,724 result;
   - a bare h5py read of the same files (`f['betas'][:]` per session, then the mask's voxels, kept as int16).
   It prints peak RSS (VmHWM) against the float32 result's size (target <= 1.3x) and the read time against the bare
   h5py read (target within 2x).
2. Training throughput: `shared_training.train_decoder` on random data of the simulated default's size
   (subject 1: 4,717 voxels; c stand-in targets 77 x 64; h = 256, batch 42), CPU, 1 thread: samples/s.
   At paper size (h = 4096, 15,724 voxels, 77 x 768, batch 42) with `--paper` (needs a GPU; memory and step time).

    .venv/bin/python benchmarks/shared_space.py --quick   # 4 sessions: validates the script (~1 min)
    .venv/bin/python benchmarks/shared_space.py           # full size: ~1 GB under /tmp, a few minutes
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GRID = (28, 26, 24)  # X, Y, Z: 17,472 voxels; the mask keeps 15,724 of them
V = 15724
T_SESSION = 750

CHILD = r"""
import json, sys, time
import numpy as np
def peak_kb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
def rss_kb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
import h5py
from neurodecode.trials import read_trials
mode, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
mask = np.load(d + "/mask.npy")
paths = [f"{d}/betas_session{s:02d}.hdf5" for s in range(1, n + 1)]
base = rss_kb()
t0 = time.time()
if mode == "bare":
    flat = np.flatnonzero(mask.transpose(2, 1, 0).ravel())  # the mask's voxels in the file's Z x Y x X order
    out = np.empty((n * 750, int(mask.sum())), np.int16)
    for k, p in enumerate(paths):
        with h5py.File(p, "r") as f:
            b = f["betas"][:]
        out[k * 750:(k + 1) * 750] = b.reshape(len(b), -1)[:, flat]
        del b
else:
    out, _, _ = read_trials(paths, mask, [750] * n, zscore=None if mode == "none" else mode, quiet=True,
                            is_test=np.zeros(n * 750, bool))
sec = time.time() - t0
print(json.dumps({"mode": mode, "seconds": sec, "peak_kb": peak_kb(), "base_kb": base, "shape": list(out.shape),
                  "dtype": str(out.dtype), "nbytes": out.nbytes}))
"""


def write_files(d: Path, n: int, seed=0):
    import h5py
    rng = np.random.default_rng(seed)
    X, Y, Z = GRID
    mask = np.zeros(GRID, bool)
    mask.reshape(-1)[np.sort(rng.choice(mask.size, V, replace=False))] = True
    np.save(d / "mask.npy", mask)
    for s in range(1, n + 1):
        b = rng.integers(-3000, 3000, (T_SESSION, Z, Y, X), dtype=np.int16)
        with h5py.File(d / f"betas_session{s:02d}.hdf5", "w") as f:
            f.create_dataset("betas", data=b)
    return mask


def run(mode, d, n):
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    import os
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(d), str(n)], capture_output=True, text=True,
                       env={**os.environ, **env})
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def loader(n, keep=False):
    d = Path(tempfile.mkdtemp(prefix="nd-trials-"))
    try:
        t0 = time.time()
        write_files(d, n)
        gb = sum(p.stat().st_size for p in d.glob("*.hdf5")) / 1e9
        print(f"wrote {n} sessions ({gb:.2f} GB) in {time.time() - t0:.0f} s under {d}")
        res = {}
        for rep in range(2):
            for mode in ("bare", "session", "train"):
                r = run(mode, d, n)
                res.setdefault(mode, []).append(r)
                print(f"  {mode:8s} rep {rep}: {r['seconds']:.1f} s, peak {r['peak_kb'] / 1e6:.2f} GB, "
                      f"result {r['nbytes'] / 1e9:.2f} GB {r['dtype']}")
        f32 = n * T_SESSION * V * 4
        bare = min(r["seconds"] for r in res["bare"])
        for mode in ("session", "train"):
            sec = min(r["seconds"] for r in res[mode])
            peak = max(r["peak_kb"] for r in res[mode]) * 1e3
            base = min(r["base_kb"] for r in res[mode]) * 1e3
            print(f"read_trials zscore={mode!r}: {sec:.1f} s = {sec / bare:.2f}x the bare h5py read ({bare:.1f} s; "
                  f"target <= 2x); peak RSS {peak / 1e9:.2f} GB = {peak / f32:.2f}x the float32 result "
                  f"({f32 / 1e9:.2f} GB; target <= 1.3x); above the interpreter's baseline: {(peak - base) / f32:.2f}x")
    finally:
        if not keep:
            shutil.rmtree(d)


def throughput(paper=False, epochs=2):
    import torch
    from neurodecode.shared_training import train_decoder
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    if paper:
        nv, T, D, h, n, dev, mp = 15724, 77, 768, 4096, 42 * 20, "auto", "fp16"
    else:
        nv, T, D, h, n, dev, mp = 4717, 77, 64, 256, 3150, "cpu", "no"
    X = rng.standard_normal((n, nv)).astype(np.float32)
    tg = rng.standard_normal((300, T, D)).astype(np.float16)
    rows = rng.integers(0, 300, n)
    t0 = time.time()
    r = train_decoder({1: X}, {1: rows}, tg, config=dict(h=h, epochs=epochs, batch_size=42, mixed_precision=mp),
                      cache=False, device=dev, quiet=True)
    sec = sum(r["log"]["epoch_seconds"])
    steps = epochs * int(np.ceil(n / 42))
    print(f"train_decoder {'paper' if paper else 'simulated-default'} size (V={nv}, {T}x{D}, h={h}, batch 42, "
          f"{r['log']['device']}): {steps * 42 / sec:.0f} samples/s ({sec / steps * 1e3:.1f} ms/step, "
          f"{steps} steps; wall incl. setup {time.time() - t0:.1f} s)")
    if paper and torch.cuda.is_available():
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="4 sessions instead of 40")
    ap.add_argument("--paper", action="store_true", help="also the paper-size throughput (GPU)")
    ap.add_argument("--skip-loader", action="store_true")
    a = ap.parse_args()
    if not a.skip_loader:
        loader(4 if a.quick else 40)
    throughput()
    if a.paper:
        throughput(paper=True)
