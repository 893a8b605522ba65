#!/usr/bin/env python
"""Does the embedded default's stand-in stage 2 add semantics? (issue 22) Subject 1 of the simulated default.

    python benchmarks/stage2_standin.py [--quick] [--n 200] [--diag]

Rows (the issue's table): stage 1 only (GRU 15, tiny VDVAE decode); stage 2 from the ridge-predicted CLIP embeddings
with the stage-1 init (Table 4's "GRU 15"); stage 2 from the TRUE embeddings with the stage-1 init (the oracle row);
stage 2 from the true embeddings with the TRUE image as init (round trip). Columns: SSIM and PixCorr (brain-diffuser's
425 px protocol), CLIP (sim) two-way identification in the tiny CLIP's space (chance 50 %), and the mean absolute
colour error in RGB levels: |mean RGB of rec - mean RGB of gt|, averaged over channels and images (the issue's).

Uses (and on a first run trains) the models behind the figures through `pipeline.Experiment` and its cache. `--diag`
adds two references (no decoding: the stimulus reduced to a flat image of its mean colour, and blurred: what
CLIP (sim) rewards) and oracle checks of the stand-ins: the tiny VD's VAE round trip alone; img2img from true vs shuffled vs
unconditional embeddings (does the conditioning change the output?); guidance scales; strength. `--quick`: 48 test
images, no diagnostics unless asked.
"""
import argparse
import time

import numpy as np
import torch

from neurodecode import metrics
from neurodecode.pipeline import Experiment
from neurodecode.report import metric_references
from neurodecode.tiny_diffusion import identification


def colour_error(gt, rec) -> float:
    "Mean absolute difference of the images' mean colours, in RGB levels (0-255), over channels and images."
    mean = lambda x: np.asarray(x, np.float64).reshape(len(x), -1, 3).mean(1)
    return float(np.abs(mean(gt) - mean(rec)).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="48 test images")
    ap.add_argument("--n", type=int, default=None, help="test images (default: all, or 48 with --quick)")
    ap.add_argument("--diag", action="store_true", help="oracle checks of the stand-ins")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    e = Experiment(subject=1, profile="default", device="cpu")
    clip, vd = e.tiny
    print(f"tiny models ready ({time.time() - t0:.0f} s); tiny VD trained in "
          f"{vd.train_log.get('seconds', float('nan')):.0f} s; {e.ds.message[:60]}...", flush=True)
    s1 = e.stage1_images("gru", 15)  # the tiny VDVAE's mean output (pipeline.TINY_VDVAE_OUTPUT)
    n = a.n or (48 if a.quick else len(s1))
    gt, s1 = e.data.images_test[:n], s1[:n]
    T, P = e.clip_targets(), e.clip_predictions("ridge")
    te, ve, pt, pv = T["text_test"][:n], T["vision_test"][:n], P["text"][:n], P["vision"][:n]
    steps = e.profile["tiny_diffusion_steps"]
    print(f"subject 1 (simulated), {n} test images, DDIM {steps} steps, strength 0.75, guidance 7.5 "
          f"({time.time() - t0:.0f} s)", flush=True)
    print(f"| stage | SSIM | PixCorr | CLIP (sim) 2-way | mean abs. colour error (RGB) | s |\n|---|---|---|---|---|---|")

    def row(name, fn):
        t1 = time.time()
        rec = fn()
        low = metrics.lowlevel_metrics(gt, rec, metrics=["SSIM", "PixCorr"], quiet=True)
        print(f"| {name} | {low['SSIM']:.3f} | {low['PixCorr']:.3f} | {identification(clip, gt, rec):.1%} | "
              f"{colour_error(gt, rec):.1f} | {time.time() - t1:.0f} |", flush=True)
        return rec

    rec = lambda init, t, v, **kw: vd.reconstruct(init, t, v, steps=kw.pop("steps", steps), seed=e.seed, quiet=True,
                                                  **kw)
    row("stage 1 only (GRU 15, VDVAE decode)", lambda: s1)
    row("stage 2, predicted embeddings", lambda: rec(s1, pt, pv))
    row("stage 2, true embeddings, stage-1 init (oracle)", lambda: rec(s1, te, ve))
    row("stage 2, true embeddings, true image init", lambda: rec(gt, te, ve))
    if not a.diag:
        return
    perm = np.roll(np.arange(n), n // 2)
    ut = np.broadcast_to(vd.uncond_text, te.shape).copy()
    uv = np.broadcast_to(vd.uncond_vision, ve.shape).copy()
    # what CLIP (sim) rewards on the stand-ins: the stimulus reduced to its mean colour, or blurred (no decoding at all)
    for name, ref in metric_references(gt).items():
        row(name, lambda r=ref: r)
    with torch.no_grad():
        row("diag: tiny VD autoencoder alone (true image)", lambda: vd._decode(vd._encode(gt)[0]))
        row("diag: tiny VD autoencoder alone (stage-1 image)", lambda: vd._decode(vd._encode(s1)[0]))
    row("diag: shuffled true embeddings, stage-1 init", lambda: rec(s1, te[perm], ve[perm]))
    row("diag: unconditional embeddings, stage-1 init", lambda: rec(s1, ut, uv))
    row("diag: true embeddings, grey init, strength 1", lambda: rec(np.full_like(gt, 128), te, ve, strength=1.0))
    row("diag: shuffled embeddings, grey init, strength 1",
        lambda: rec(np.full_like(gt, 128), te[perm], ve[perm], strength=1.0))
    for g in (1.0, 3.0, 15.0):
        row(f"diag: true embeddings, stage-1 init, guidance {g}", lambda: rec(s1, te, ve, guidance=g))
    for s in (0.5, 0.9):
        row(f"diag: true embeddings, stage-1 init, strength {s}", lambda: rec(s1, te, ve, strength=s))
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
