"""Simulated NSD build: wall time per stage, tree size, and how well the tree's betas recover the true amplitudes.

Target (issue 3): the `default` profile, subjects 1, 2, 5, 7, built in under 3 minutes on 2 cores. Reference for the
betas stage: GLMsingle's published timing for one NSD session (examples/example1.ipynb: 13 min 05 s for 750 trials
of a 145 x 186 slice), reported per session and per 1,000 voxels.

    .venv/bin/python benchmarks/synthetic.py --quick                 # smoke world, subject 1, both betas methods
    .venv/bin/python benchmarks/synthetic.py                         # default world, subjects 1 2 5 7, GLMsingle
    .venv/bin/python benchmarks/synthetic.py --subjects 1 --method ols
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from neurodecode import nsd, nsd_write, synthetic
from neurodecode.sim import world
from neurodecode.synthetic import get_profile, make_simulated_nsd, read_ground_truth

GLMSINGLE_EXAMPLE1_S = 13 * 60 + 5  # one NSD session, 145 x 186 = 26,970 voxels (GLMsingle examples/example1)
GLMSINGLE_EXAMPLE1_VOXELS = 145 * 186


def _du(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _timed(stages: dict, name: str, fn):
    "Wrap `fn` so each call adds its wall time to stages[name]."
    def wrapped(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - t
    return wrapped


def run(profile: str, subjects: tuple, method: str, root: Path) -> dict:
    stages = {}
    patches = {"make_brain": world.make_brain, "brain_responses": world.brain_responses,
               "simulate_session": world.simulate_session, "_session_betas": world._session_betas,
               "_write_shared": world._write_shared}
    for k, f in patches.items():  # the world writer looks these up in its own module
        setattr(world, k, _timed(stages, k, f))
    writers = {}
    for k in ("write_timeseries_run", "write_betas_session", "write_design_run", "write_roi"):
        writers[k] = getattr(nsd_write, k)
        setattr(nsd_write, k, _timed(stages, "nsd." + k, writers[k]))
    try:
        t = time.perf_counter()
        make_simulated_nsd(root, subjects, profile, seed=0, betas_method=method, quiet=False)
        total = time.perf_counter() - t
    finally:
        for k, f in patches.items():
            setattr(world, k, f)
        for k, f in writers.items():
            setattr(nsd_write, k, f)
    P = get_profile(profile)
    rec = {}
    for s in subjects:
        gt = read_ground_truth(root, s)
        mask = nsd.load_roi_mask(s, "nsdgeneral", root)
        b = nsd.read_betas_session(root / nsd.betas_file(s, 1), mask).astype(np.float32) / 300
        t1 = gt.trial_amplitudes[:P.trials_per_session]
        r = [np.corrcoef(b[:, v], t1[:, v])[0, 1] for v in np.flatnonzero(gt.responsive)]
        rec[s] = float(np.median(r))
    return {"total_s": total, "stages": stages, "bytes": _du(root), "recovery": rec}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke profile, subject 1, both betas methods")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 5, 7])
    ap.add_argument("--method", default="glmsingle", choices=("glmsingle", "ols"))
    a = ap.parse_args()
    if a.quick:
        a.profile, a.subjects = "smoke", [1]
    methods = ("ols", "glmsingle") if a.quick else (a.method,)
    P = get_profile(a.profile)
    print(f"profile {P.name}: {P.n_images} images/subject, {P.n_sessions} sessions x {P.trials_per_session} trials "
          f"in {P.n_runs} runs of {P.n_volumes} volumes; subjects {a.subjects}")
    results = {}
    for m in methods:
        root = Path(tempfile.mkdtemp()) / "sim"
        try:
            res = results[m] = run(a.profile, tuple(a.subjects), m, root)
        finally:
            shutil.rmtree(root.parent, ignore_errors=True)
        print(f"\n[{m}] total {res['total_s']:.1f} s for {len(a.subjects)} subject(s); tree {res['bytes'] / 2**20:.0f} MiB")
        for k, v in sorted(res["stages"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:28s} {v:8.1f} s")
        print("  median r(session-1 betas, true amplitudes), responsive voxels: "
              + ", ".join(f"subj{s:02d} {r:.2f}" for s, r in res["recovery"].items()))
        if m == "glmsingle":
            n_sess = P.n_sessions * len(a.subjects)
            per = res["stages"].get("_session_betas", 0) / n_sess
            vox = np.mean([round(P.voxel_scale * synthetic.NSD_NSDGENERAL_VOXELS[s]) * (1 + P.other_fraction)
                           for s in a.subjects])
            ref = GLMSINGLE_EXAMPLE1_S / GLMSINGLE_EXAMPLE1_VOXELS * 1000
            print(f"  GLMsingle: {per:.1f} s per session ({P.trials_per_session} trials, ~{vox:.0f} voxels) = "
                  f"{per / vox * 1000:.1f} s per 1,000 voxels; GLMsingle example1 {ref:.1f} s per 1,000 voxels "
                  f"(ratio {per / vox * 1000 / ref:.2f}; different trial counts and machines)")
    if a.profile == "default":
        print(f"\ntarget: under 180 s for subjects 1, 2, 5, 7 on 2 cores; measured {results[methods[0]]['total_s']:.0f} s")


if __name__ == "__main__":
    main()
