#!/usr/bin/env python
"""The tiny stage-2 model on a simulated subject's test images (issue 6's identification target, in the pipeline's
own setting): how identifiable stage-2 reconstructions are in the tiny CLIP's space, and how much they depend on the
init image.

    python benchmarks/diffusion_subject.py [--subject 1] [--n 64] [--steps 20]

Uses (and, on a first run, trains) the embedded default's models through `pipeline.Experiment`, so its numbers are
those of the models behind the committed figures. Rows: the tiny VD's own autoencoder; img2img (strength 0.75) from
the TRUE CLIP embeddings with the image itself as init, and with the init destroyed by +256 noise; from the
ridge-predicted embeddings with the GRU stage-1 image as init, and with it at +64 and +256 noise. Chance is 50 %.
"""
import argparse
import time

import numpy as np
import torch
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

from neurodecode.diffusion import perturb_init
from neurodecode.tiny_diffusion import identification
from neurodecode.pipeline import Experiment


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--n", type=int, default=64, help="test images")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (the default profile's tiny_diffusion_steps)")
    a = ap.parse_args()
    e = Experiment(subject=a.subject, profile="default", device="cpu")
    clip, vd = e.tiny
    n = a.n
    gt = e.data.images_test[:n]
    T, P = e.clip_targets(), e.clip_predictions("ridge")
    te, ve, pt, pv = T["text_test"][:n], T["vision_test"][:n], P["text"][:n], P["vision"][:n]
    s1 = e.stage1_images("gru", 15)[:n]

    def ssim(a_, b_):
        return np.mean([structural_similarity(rgb2gray(x), rgb2gray(y), gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, data_range=1.0) for x, y in zip(a_, b_)])

    def pixcorr(a_, b_):
        return np.mean([np.corrcoef(x.ravel().astype(float), y.ravel().astype(float))[0, 1] for x, y in zip(a_, b_)])

    def row(name, rec, t0=None):
        dt = f"  ({time.time() - t0:.0f} s)" if t0 else ""
        print(f"{name:44s} SSIM(64 px) {ssim(gt, rec):.3f}  PixCorr {pixcorr(gt, rec):.3f}  "
              f"two-way id {identification(clip, gt, rec):.1%}{dt}", flush=True)

    print(f"subject {a.subject} (simulated), {n} test images, tiny VD trained in "
          f"{vd.train_log.get('seconds', float('nan')):.0f} s, DDIM {a.steps} steps at strength 0.75")
    with torch.no_grad():
        z, _ = vd._encode(gt)
        row("tiny VD autoencoder alone", vd._decode(z))
    for name, init, t, v in [("true embeddings, image as init", gt, te, ve),
                             ("true embeddings, init destroyed (+256)", perturb_init(gt, 256, 0), te, ve),
                             ("predicted embeddings, stage-1 init", s1, pt, pv),
                             ("predicted embeddings, stage-1 init +64", perturb_init(s1, 64, 0), pt, pv),
                             ("predicted embeddings, stage-1 init +256", perturb_init(s1, 256, 0), pt, pv)]:
        t0 = time.time()
        row(name, vd.reconstruct(init, t, v, steps=a.steps, quiet=True), t0)


if __name__ == "__main__":
    main()
