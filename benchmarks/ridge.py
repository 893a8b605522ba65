#!/usr/bin/env python
"""Ridge at subject-1 scale: neurodecode.regressors vs sklearn.linear_model.Ridge called as brain-diffuser calls it.

Cases (issue 9 §3):
  vdvae  one multi-output fit X (n x p) -> Y (n x t), alpha 50,000, then predictions for m test rows
  clip   token-wise fits X -> Y (n x T x D), alpha 60,000 for every token (brain-diffuser: one sklearn fit per token)
  sweep  the vdvae case for 10 alphas, predictions for every alpha (solver "auto": one Cholesky per alpha;
         --sweep-solver eigh: one eigendecomposition for all)

Every contender runs in its own subprocess, so its peak resident memory (ru_maxrss) is its own. Memory is reported
as the peak minus the resident size after imports, i.e. data + algorithm. sklearn is too slow / too large to run on
all targets, so it runs on subsets of the targets (vdvae) or a few tokens (clip) and its time and memory are
extrapolated linearly (the fixed kernel + factorisation cost is the intercept of a two-point fit); the output says so.

Full size (needs ~12 GB free for vdvae, ~11 GB for clip; sklearn float64 itself would need ~36 GB):
    .venv/bin/python benchmarks/ridge.py
    .venv/bin/python benchmarks/ridge.py --case vdvae --sk-full   # sklearn float32 measured on all targets (~19 GiB)
Reduced size for checking the script on a shared machine:
    .venv/bin/python benchmarks/ridge.py --quick
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL = dict(n=8859, p=15724, m=982, t=91168, T=257, D=768)
QUICK = dict(n=1500, p=3000, m=200, t=12000, T=40, D=96)
BLOCK = 1024  # columns per generation block (so any prefix of the targets is reproducible alone)


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_X(n, p, m, seed=0):
    "Train and test inputs, float32, z-scored-like."
    rng = np.random.default_rng(seed)
    X = np.empty((n + m, p), np.float32)
    for i in range(0, n + m, 1024):
        rng.standard_normal(out=X[i:i + 1024], dtype=np.float32)
    return X[:n], X[n:]


def make_Y(X, t, k=64, seed=1, dtype=np.float32):
    "Targets with a planted rank-k linear signal plus noise; column block b depends only on (seed, b)."
    n = X.shape[0]
    Y = np.empty((n, t), dtype)
    for b, j in enumerate(range(0, t, BLOCK)):
        w = min(BLOCK, t - j)
        rng = np.random.default_rng([seed, b])
        R = rng.standard_normal((k, w), dtype=np.float32) / np.sqrt(k)
        noise = rng.standard_normal((n, w), dtype=np.float32)
        Y[:, j:j + w] = X[:, :k] @ R + noise
    return Y


def worker(a):
    "Run one contender; print a JSON line with its time, memory and where its predictions were saved."
    import torch
    torch.set_num_threads(a.threads)
    from sklearn.linear_model import Ridge as SkRidge
    from neurodecode.regressors import Ridge, TokenwiseRidge
    base = rss_mb()
    X, Xt = make_X(a.n, a.p, a.m)
    dt = np.float64 if a.dtype == "float64" else np.float32
    out = {"who": a.worker, "dtype": a.dtype, "targets": a.targets}
    if a.worker in ("ours-vdvae", "sk-vdvae", "ours-sweep"):
        Y = make_Y(X, a.targets, dtype=np.float32)
        Xt_test = Xt
        if a.worker == "sk-vdvae":
            Xd, Yd, Xtd = X.astype(dt), Y.astype(dt), Xt.astype(dt)
            del Y
            t0 = time.perf_counter()
            P = SkRidge(alpha=a.alpha, max_iter=10000, fit_intercept=True).fit(Xd, Yd).predict(Xtd)
            out["seconds"] = time.perf_counter() - t0
        elif a.worker == "ours-vdvae":
            t0 = time.perf_counter()
            P = Ridge(a.alpha, dtype=a.dtype, device=a.device, quiet=True).fit(X, Y).predict(Xt_test)
            out["seconds"] = time.perf_counter() - t0
        else:
            alphas = np.geomspace(a.alpha / 100, a.alpha * 100, 10)
            t0 = time.perf_counter()
            r = Ridge(dtype=a.dtype, device=a.device, solver=a.sweep_solver, quiet=True).fit(X, Y)
            for al, Pa in r.predict_path(Xt_test, alphas):
                float(Pa.mean())  # a caller scores each alpha's predictions here, then drops them
            out["seconds"] = time.perf_counter() - t0
            P = np.zeros((0, 0), np.float32)
        sizes = X.nbytes + Xt.nbytes + a.targets * a.n * 4 + a.m * a.targets * 4
    else:  # clip
        T = a.targets
        Y = np.empty((a.n, T, a.D), np.float32)
        for k in range(T):
            Y[:, k] = make_Y(X, a.D, seed=100 + k)
        if a.worker == "sk-clip":
            Xd, Xtd = X.astype(dt), Xt.astype(dt)
            t0 = time.perf_counter()
            P = np.stack([SkRidge(alpha=a.alpha, max_iter=50000, fit_intercept=True).fit(Xd, Y[:, k].astype(dt))
                          .predict(Xtd) for k in range(T)], 1)
            out["seconds"] = time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            P = TokenwiseRidge(a.alpha, dtype=a.dtype, device=a.device, quiet=True).fit(X, Y).predict(Xt)
            out["seconds"] = time.perf_counter() - t0
        P = P.reshape(len(P), -1)
        sizes = (X.nbytes + Xt.nbytes) + Y.nbytes + a.m * T * a.D * 4
    out["peak_mb"] = peak_mb() - base
    out["budget_mb"] = 1.3 * sizes / 2**20
    if a.save and P.size:
        np.save(a.save, P[:, :a.compare_cols] if a.compare_cols else P)
        out["saved"] = a.save
    print("RESULT " + json.dumps(out), flush=True)


def run(args, **kw):
    cmd = [sys.executable, __file__, "--worker", kw.pop("worker")]
    for k, v in {**{k: getattr(args, k) for k in ("n", "p", "m", "D", "device", "threads", "sweep_solver")}, **kw}.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if r.returncode or not line:
        raise RuntimeError(f"worker failed: {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(line[0][7:])


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def extrapolate(r1, r2, key, t):
    "Linear fit through two (targets, value) points, evaluated at t."
    x1, x2 = r1["targets"], r2["targets"]
    slope = (r2[key] - r1[key]) / (x2 - x1)
    return r1[key] + slope * (t - x1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"reduced sizes {QUICK}")
    ap.add_argument("--case", default="all", choices=["all", "vdvae", "clip", "sweep"])
    for k, v in FULL.items():
        ap.add_argument(f"--{k}", type=int, default=None, help=f"default {v} (quick {QUICK[k]})")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sweep-solver", default="auto", choices=["auto", "cholesky", "eigh"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sk-targets", type=int, nargs=2, default=None, help="two target subset sizes for sklearn")
    ap.add_argument("--sk-tokens", type=int, nargs=2, default=None, help="two token counts for sklearn (clip)")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--sk-full", action="store_true",
                    help="also run sklearn float32 on ALL vdvae targets (measured, not extrapolated; ~19 GiB at full size)")
    ap.add_argument("--no-float64", action="store_true", help="skip our float64 run (sklearn runs in both)")
    # worker-only arguments
    ap.add_argument("--worker", default=None)
    ap.add_argument("--targets", type=int, default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--alpha", type=float, default=50000.0)
    ap.add_argument("--save", default="")
    ap.add_argument("--compare-cols", type=int, default=0)
    a = ap.parse_args()
    sizes = QUICK if a.quick else FULL
    for k, v in sizes.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.worker:
        return worker(a)

    tmp = Path(tempfile.mkdtemp(prefix="ridge-bench-"))
    print(f"# ridge benchmark  n={a.n} p={a.p} m={a.m}  t={a.t}  T×D={a.T}×{a.D}  device={a.device} "
          f"threads={a.threads}  {'(quick)' if a.quick else '(full size)'}")
    print(f"# cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (timings inflate under contention)")
    rows = []

    def show(name, r, extra=""):
        print(f"{name:<44} {r['seconds']:9.1f} s  peak {r['peak_mb'] / 1024:6.2f} GiB  "
              f"(budget 1.3×(X+Y+P) = {r['budget_mb'] / 1024:.2f} GiB) {extra}", flush=True)

    if a.case in ("all", "vdvae"):
        print(f"\n## vdvae: {a.t} targets, alpha 50,000")
        sk_t = a.sk_targets or ([1024, 3072] if not a.quick else [2048, 6144])
        ours = {}
        for dt in ("float32",) + (() if a.no_float64 else ("float64",)):
            ours[dt] = run(a, worker="ours-vdvae", targets=a.t, dtype=dt, alpha=50000,
                           save=tmp / f"ours-{dt}.npy", compare_cols=sk_t[0])
            show(f"neurodecode Ridge {dt}", ours[dt])
        if not a.no_sklearn:
            for dt in ("float32", "float64"):
                r1 = run(a, worker="sk-vdvae", targets=sk_t[0], dtype=dt, alpha=50000, save=tmp / f"sk-{dt}.npy")
                r2 = run(a, worker="sk-vdvae", targets=sk_t[1], dtype=dt, alpha=50000)
                for r in (r1, r2):
                    show(f"sklearn Ridge {dt} on {r['targets']} targets (measured)", r)
                est = {"seconds": extrapolate(r1, r2, "seconds", a.t), "peak_mb": extrapolate(r1, r2, "peak_mb", a.t),
                       "budget_mb": ours["float32"]["budget_mb"]}
                if r2["seconds"] <= r1["seconds"]:
                    print("   (timings too noisy to extrapolate: the larger subset was not slower; quiet machine needed)")
                    continue
                show(f"sklearn Ridge {dt} (extrapolated from {sk_t[0]},{sk_t[1]} targets)", est)
                P_sk = np.load(tmp / f"sk-{dt}.npy")
                for odt, o in ours.items():
                    P_o = np.load(tmp / f"ours-{odt}.npy")
                    print(f"   speed-up of ours {odt} vs sklearn {dt}: {est['seconds'] / o['seconds']:.1f}x; "
                          f"rel. prediction difference on {sk_t[0]} targets: {rel(P_o, P_sk):.2e}; "
                          f"max |diff| {np.abs(P_o - P_sk).max():.2e}")

        if a.sk_full:
            r = run(a, worker="sk-vdvae", targets=a.t, dtype="float32", alpha=50000)
            show(f"sklearn Ridge float32 on all {a.t} targets (measured)", r)
            print(f"   measured speed-up of ours float32 vs sklearn float32: {r['seconds'] / ours['float32']['seconds']:.1f}x")

    if a.case in ("all", "sweep"):
        print(f"\n## sweep: 10 alphas, predictions for every alpha, {a.t} targets")
        r = run(a, worker="ours-sweep", targets=a.t, dtype="float32", alpha=50000)
        show(f"neurodecode Ridge float32, 10 alphas, solver {a.sweep_solver}", r)

    if a.case in ("all", "clip"):
        print(f"\n## clip: {a.T} tokens × {a.D}, alpha 60,000 per token")
        o = run(a, worker="ours-clip", targets=a.T, dtype="float32", alpha=60000, save=tmp / "ours-clip.npy")
        show("neurodecode TokenwiseRidge float32", o)
        if not a.no_sklearn:
            k = a.sk_tokens or ([1, 2] if not a.quick else [2, 4])
            r1 = run(a, worker="sk-clip", targets=k[0], dtype="float32", alpha=60000, save=tmp / "sk-clip.npy")
            r2 = run(a, worker="sk-clip", targets=k[1], dtype="float32", alpha=60000)
            for r in (r1, r2):
                show(f"sklearn Ridge float32 on {r['targets']} token(s) (measured)", r)
            est = {"seconds": extrapolate(r1, r2, "seconds", a.T), "peak_mb": max(r1["peak_mb"], r2["peak_mb"]),
                   "budget_mb": o["budget_mb"]}
            if r2["seconds"] <= r1["seconds"]:  # per-token cost is the same for every token: scale the mean
                est["seconds"] = (r1["seconds"] + r2["seconds"]) / (r1["targets"] + r2["targets"]) * a.T
            show(f"sklearn Ridge float32 × {a.T} tokens (extrapolated from {k[0]},{k[1]} tokens)", est)
            P_sk = np.load(tmp / "sk-clip.npy")
            P_o = np.load(tmp / "ours-clip.npy")[:, :P_sk.shape[1]]
            print(f"   speed-up: {est['seconds'] / o['seconds']:.1f}x; rel. prediction difference on {k[0]} token(s): "
                  f"{rel(P_o, P_sk):.2e}")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
