"""Peak memory of `neurodecode.nsd.load_subject` for one subject at NSD's full size (issue 3: must stay under 3 GB).

Builds a format-faithful random NSD tree (`nsd_write.write_random_nsd`): subject 1's func1pt8mm grid 81 x 104 x 83, an
nsdgeneral of 15,724 voxels, a 40-session design of 750 trials (each of 10,000 images shown 3 times, 1,000 shared),
betas HDF5 (int16 x 300, trials x Z x Y x X, compressed chunks so the zeros outside the mask cost little disk) for the
37 sessions of the Brain-Diffuser protocol, a 73,000-row imgBrick of 425 px images (chunked; only the subject's rows written, so only they use disk)
and COCO captions. Then it runs `load_subject(1, root)` in fresh subprocesses and reads their peak RSS
(`VmHWM` of /proc/self/status; `ru_maxrss` would include the parent's peak, kept across fork/exec): once cold (reads betas, writes the cache) and once warm (cache hit).

The reference for the ratio is Brain-Diffuser's `data/prepare_nsddata.py`, which loads one whole session with
nibabel as float64 (81 x 104 x 83 x 750 x 8 B) and keeps every trial of the 37 sessions in float32
(27,750 x 15,724 x 4 B): an *estimate* from its code (not run here, it needs real NSD).

    .venv/bin/python benchmarks/nsd_memory.py --quick    # 3 sessions, 64 px images: validates the script (~1 min)
    .venv/bin/python benchmarks/nsd_memory.py            # full size: ~10 GB under /tmp, several minutes, deleted after
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
def peak_kb():  # VmHWM: this process's own high-water mark (ru_maxrss keeps the parent's across fork/exec)
    try:
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.time()
from neurodecode import nsd
t_imp = peak_kb()
sd = nsd.load_subject(1, sys.argv[1], cache_dir=sys.argv[2], quiet=True)
x = float(sd.X_train[:, :10].sum()) + float(sd.images_test[:2].sum())  # touch the arrays
print(json.dumps({"peak_kb": peak_kb(), "import_kb": t_imp,
                  "seconds": time.time() - t0, "train": list(sd.X_train.shape), "test": list(sd.X_test.shape),
                  "images": list(sd.images_train.shape), "sessions": sd.description["n_sessions"]}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 sessions and 64 px images (validation run)")
    ap.add_argument("--root", default=None, help="where to build the tree (default: a new folder under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the tree afterwards")
    ap.add_argument("--compression", default="gzip", help="HDF5 filter of the fixture's betas files (gzip, lzf)")
    ap.add_argument("--distinct-sessions", action="store_true",
                    help="write every session's betas (slow on a shared machine) instead of hard links to session 1")
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from neurodecode import nsd, nsd_write

    full = not a.quick
    cfg = dict(subject=1, n_sessions=40 if full else 3, trials=750, runs=12, n_shared=1000 if full else 100,
               grid=nsd.NSD_GRID[1], n_voxels=nsd.NSD_NSDGENERAL_VOXELS[1], image_size=425 if full else 64,
               n_stimuli=73000, betas_sessions=37 if full else 3, compression=a.compression, stimuli_compression=None)
    n_betas = cfg["betas_sessions"]
    if not a.distinct_sessions:
        cfg["betas_sessions"] = 1
    base = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix="nsd_memory_", dir="/tmp"))
    free = shutil.disk_usage(base).free / 2**30
    need = 12 if full else 1
    print(f"tree: {base} ({free:.0f} GiB free; needs about {need} GiB)")
    if free < need + 5:
        sys.exit(f"not enough free disk under {base}: {free:.0f} GiB free, about {need + 5} GiB wanted")
    try:
        t0 = time.time()
        root = nsd_write.write_random_nsd(base / "nsd", **cfg)
        if not a.distinct_sessions:  # same bytes, every session still read in full: memory is what is measured
            for s in range(2, n_betas + 1):
                (root / nsd.betas_file(1, s)).hardlink_to(root / nsd.betas_file(1, 1))
            print(f"sessions 2..{n_betas}: hard links to session 1's betas file (pass --distinct-sessions to write each)")
        inodes = {p.stat().st_ino: p.stat().st_blocks * 512 for p in (base / "nsd").rglob("*") if p.is_file()}
        print(f"built in {time.time() - t0:.0f} s: {sum(inodes.values()) / 2**30:.2f} GiB on disk; "
              f"config {json.dumps({**cfg, 'betas_sessions': n_betas})}")
        runs = {}
        for name in ("cold (prepare + write cache)", "warm (cache hit)"):
            r = subprocess.run([sys.executable, "-c", CHILD, str(root), str(base / "cache")], capture_output=True,
                               text=True)
            if r.returncode:
                sys.exit(f"load_subject failed:\n{r.stderr[-3000:]}")
            runs[name] = json.loads(r.stdout.strip().splitlines()[-1])
        V, g = cfg["n_voxels"], cfg["grid"]
        n_trials = n_betas * cfg["trials"]
        ref_gb = (g[0] * g[1] * g[2] * cfg["trials"] * 8 + n_trials * V * 4) / 1e9
        print(f"\nload_subject(1) on a {'FULL-SIZE' if full else 'QUICK (reduced)'} tree: "
              f"{n_betas} sessions x {cfg['trials']} trials, {V} voxels, grid {g}, "
              f"{cfg['image_size']} px images")
        for name, r in runs.items():
            print(f"  {name:30s} peak RSS {r['peak_kb'] / 1e6:.2f} GB (after imports {r['import_kb'] / 1e6:.2f} GB), "
                  f"{r['seconds']:.0f} s; train {r['train']}, test {r['test']}, images {r['images']}")
        peak = max(r["peak_kb"] for r in runs.values()) / 1e6
        print(f"  target < 3 GB: {'met' if peak < 3 else 'NOT met'} (peak {peak:.2f} GB)")
        print(f"  reference (Brain-Diffuser prepare_nsddata.py, estimated from its code): ~{ref_gb:.1f} GB; "
              f"ratio neurodecode / reference = {peak / ref_gb:.2f}")
        print("  timings are on a shared machine (other jobs running) (load average above 2); I/O bound")
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
            print(f"removed {base}")


if __name__ == "__main__":
    main()
