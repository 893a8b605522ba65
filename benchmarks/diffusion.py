"""Tiny stage-2 models of the embedded default: training time and two-way identification of reconstructions from the
TRUE tiny-CLIP embeddings of held-out simulated scenes (chance 50%; target >= 80%).

    python benchmarks/diffusion.py                 # full size: the TINY_*_DEFAULTS, 2000 training scenes, 64 held out
    python benchmarks/diffusion.py --quick         # code-path check: a few steps, 128 scenes, 16 held out
    python benchmarks/diffusion.py --cache DIR     # where trained models are cached (default: a temp folder)

Timings depend on machine load: report the load (`uptime`) with them.
"""
import argparse
import json
import tempfile
import time

import numpy as np
from PIL import Image

from neurodecode.diffusion import perturb_init
from neurodecode.tiny_diffusion import TINY_CLIP_DEFAULTS, TINY_VD_DEFAULTS, identification, train_tiny_models
from neurodecode.synthetic import make_scenes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-held", type=int, default=None)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps of the reconstruction schedule")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    n_train = a.n_train or (128 if a.quick else 2000)
    n_held = a.n_held or (16 if a.quick else 64)
    cc = dict(steps=10) if a.quick else {}
    vc = dict(vae_steps=10, unet_steps=10) if a.quick else {}
    tr = make_scenes(n_train, seed=0, size=64)
    ho = make_scenes(n_held, seed=0, size=64, start=n_train)
    t0 = time.time()
    clip, vd = train_tiny_models(tr.images, tr.captions, seed=0, cache=a.cache or tempfile.mkdtemp(), device=a.device,
                                 clip_config=cc, vd_config=vc)
    out = {"n_train": n_train, "n_held": n_held, "clip_config": {**TINY_CLIP_DEFAULTS, **cc},
           "vd_config": {**TINY_VD_DEFAULTS, **vc}, "wall_s_train_or_cache": round(time.time() - t0, 1),
           "train_s_clip": round(clip.train_log["seconds"], 1), "train_s_vd": round(vd.train_log["seconds"], 1)}
    T, V = clip.text_embeddings(ho.captions), clip.vision_embeddings(ho.images)
    blurred = np.stack([np.asarray(Image.fromarray(x).resize((8, 8), Image.BILINEAR).resize((64, 64), Image.BICUBIC))
                        for x in ho.images])
    out["id_blurred_init_alone"] = identification(clip, ho.images, blurred)
    cases = [("grey_init_strength1", np.full_like(ho.images, 128), 1.0), ("blurred_init_0.75", blurred, 0.75),
             ("noise256_init_0.75", perturb_init(ho.images, 256, seed=0), 0.75)]  # the init destroyed: does it matter?
    for name, init, s in cases:
        t = time.time()
        rec = vd.reconstruct(init, T, V, strength=s, steps=a.steps)
        out[f"id_{name}"] = identification(clip, ho.images, rec)
        out[f"reconstruct_s_{name}"] = round(time.time() - t, 1)
    print(json.dumps(out, indent=1, default=str))
    print(f"two-way identification from true embeddings: grey init {out['id_grey_init_strength1']:.1%}, "
          f"blurred init {out['id_blurred_init_0.75']:.1%} (blurred init alone {out['id_blurred_init_alone']:.1%}; "
          f"init destroyed by +256 noise {out['id_noise256_init_0.75']:.1%}); "
          f"target >= 80%")


if __name__ == "__main__":
    main()
