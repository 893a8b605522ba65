#!/usr/bin/env python
"""Variants of the embedded default's tiny Versatile Diffusion, judged by the oracle checks of issue 22 (subject 1).

    python benchmarks/tiny_vd_variants.py vd  '{"latent_channels": 16, "unet_steps": 1000}' [--n 48]
    python benchmarks/tiny_vd_variants.py vae '{"vae_steps": 500, "vae_blur": 0}' [--n 200]

`vd` trains a whole tiny VD (VAE, then UNet) with `config` overriding `TINY_VD_DEFAULTS`, on the same corpus, tiny
CLIP and seed as the figures' model, into a scratch cache (`--cache`, default a folder per config under the system's
temp dir: the figures' cache is never touched), then prints, on the first `--n` test images of subject 1:

- stage 1 (GRU 15, tiny VDVAE mean), the variant's autoencoder alone on the true and on the stage-1 images;
- stage 2 from the predicted embeddings, from the true ones (oracle, stage-1 init), from the true image, and from a
  grey image at strength 1 (what the model makes of the embeddings alone).

`vae` trains only the autoencoder part, with `train_tiny_vd`'s loss and batches (`vae_blur`: half of each batch
Gaussian-blurred, as `tiny_diffusion._blur_half` does), and prints its round trip on the true and stage-1 images.
About 3 min per 500 VAE steps on one core; `vd` about 15 min on one core at the defaults.

Columns: SSIM and PixCorr (brain-diffuser's protocol), CLIP (sim) 2-way identification in the tiny CLIP's space, and
the mean absolute colour error (RGB levels) of `stage2_standin.colour_error`. Every number is from the simulated
subject with stand-in networks.
"""
import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neurodecode import metrics
from neurodecode.core import ArtifactCache
from neurodecode.pipeline import Experiment
from neurodecode.tiny_diffusion import TINY_VD_DEFAULTS, identification, train_tiny_vd

from stage2_standin import colour_error


def _row(clip, gt, name, rec, seconds=None):
    low = metrics.lowlevel_metrics(gt, rec, metrics=["SSIM", "PixCorr"], quiet=True)
    s = "" if seconds is None else f" {seconds:.0f} |"
    print(f"| {name} | {low['SSIM']:.3f} | {low['PixCorr']:.3f} | {identification(clip, gt, rec):.1%} | "
          f"{colour_error(gt, rec):.1f} |{s}", flush=True)


def train_vae_only(images, config: dict, seed: int):
    "The tiny VD's autoencoder trained alone with `train_tiny_vd`'s loss, batches and blur augmentation."
    import torch.nn.functional as F
    from diffusers import AutoencoderKL
    from neurodecode.tiny_diffusion import _blur_half, _lr
    cfg = {**TINY_VD_DEFAULTS, **config}
    nv = len(cfg["vae_channels"])
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=tuple(cfg["vae_channels"]), down_block_types=("DownEncoderBlock2D",) * nv,
                        up_block_types=("UpDecoderBlock2D",) * nv, latent_channels=cfg["latent_channels"],
                        layers_per_block=1, norm_num_groups=8, sample_size=images.shape[1],
                        mid_block_add_attention=False).train()
    px = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["vae_lr"], weight_decay=0.0)
    n, bv, k = cfg["vae_steps"], cfg["vae_batch"], max(images.shape[1] // 8, 1)
    for step in range(n):
        for g in opt.param_groups:  # train_tiny_vd's schedule: warm-up, then cosine
            g["lr"] = _lr(step, n, cfg["vae_lr"], cfg["warmup"])
        rng = np.random.default_rng([seed, step, 2])
        xb = px[rng.choice(len(px), bv, replace=False)]
        if cfg["vae_blur"]:
            xb = _blur_half(xb, rng, cfg["vae_blur"])
        post = vae.encode(xb).latent_dist
        rec = vae.decode(post.sample(generator=torch.Generator().manual_seed(int(rng.integers(2**31))))).sample
        loss = F.l1_loss(rec, xb) + F.mse_loss(rec, xb) + cfg["kl_weight"] * post.kl().mean()
        if cfg["colour_weight"]:
            loss = loss + cfg["colour_weight"] * F.l1_loss(F.avg_pool2d(rec, k), F.avg_pool2d(xb, k))
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()

    @torch.no_grad()
    def round_trip(x):
        p = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).float() / 127.5 - 1
        r = vae.decode(vae.encode(p).latent_dist.mean).sample
        return ((r.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return round_trip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("vd", "vae"))
    ap.add_argument("config", help="JSON overrides of TINY_VD_DEFAULTS, e.g. '{\"latent_channels\": 16}'")
    ap.add_argument("--n", type=int, default=None, help="test images (default 48 for vd, 200 for vae)")
    ap.add_argument("--cache", default=None, help="vd: scratch cache folder (default: temp dir, per config)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    config = json.loads(a.config)
    unknown = set(config) - set(TINY_VD_DEFAULTS)
    if unknown:
        ap.error(f"unknown config keys {sorted(unknown)}; allowed: {sorted(TINY_VD_DEFAULTS)}")
    torch.set_num_threads(a.threads)
    e = Experiment(subject=1, profile="default", device="cpu")
    clip, vd0 = e.tiny  # the figures' models: their tiny CLIP conditions every variant
    n = a.n or (48 if a.mode == "vd" else 200)
    gt, s1 = e.data.images_test[:n], e.stage1_images("gru", 15)[:n]
    sc = e.pretrain_scenes
    print(f"subject 1 (simulated), {n} test images; variant {config} of TINY_VD_DEFAULTS")
    print("| row | SSIM | PixCorr | CLIP (sim) | colour error (RGB) |" + (" s |" if a.mode == "vae" else ""))
    print("|---|---|---|---|---|" + ("---|" if a.mode == "vae" else ""))
    _row(clip, gt, "stage 1 (GRU 15)", s1)
    if a.mode == "vae":
        t0 = time.time()
        rt = train_vae_only(sc.images, config, e.seed)
        t = time.time() - t0
        _row(clip, gt, "variant VAE, true image", rt(gt), t)
        _row(clip, gt, "variant VAE, stage-1 image", rt(s1), t)
        return
    tag = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    cache = ArtifactCache(a.cache or Path(tempfile.gettempdir()) / f"neurodecode-tiny-vd-{tag}")
    t0 = time.time()
    vd = train_tiny_vd(sc.images, sc.captions, clip, seed=e.seed, cache=cache, device="cpu", config=config, quiet=True)
    print(f"variant trained or loaded in {time.time() - t0:.0f} s (training took {vd.train_log['seconds']:.0f} s); "
          f"cache {cache.root}", flush=True)
    T, P = e.clip_targets(), e.clip_predictions("ridge")
    te, ve, pt, pv = T["text_test"][:n], T["vision_test"][:n], P["text"][:n], P["vision"][:n]
    steps = e.profile["tiny_diffusion_steps"]
    rec = lambda init, t, v, **kw: vd.reconstruct(init, t, v, steps=steps, seed=e.seed, quiet=True, **kw)
    with torch.no_grad():
        _row(clip, gt, "variant VAE, true image", vd._decode(vd._encode(gt)[0]))
        _row(clip, gt, "variant VAE, stage-1 image", vd._decode(vd._encode(s1)[0]))
    _row(clip, gt, "stage 2, predicted embeddings", rec(s1, pt, pv))
    _row(clip, gt, "stage 2, true embeddings, stage-1 init (oracle)", rec(s1, te, ve))
    _row(clip, gt, "stage 2, true embeddings, true image init", rec(gt, te, ve))
    _row(clip, gt, "stage 2, true embeddings, grey init, strength 1", rec(np.full_like(gt, 128), te, ve, strength=1.0))


if __name__ == "__main__":
    main()
