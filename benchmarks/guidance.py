"""Cost of NeuralDiffuser's feature guidance on the CPU stand-in: guided (eta=0.2) over unguided time per image, one run.

Both conditions run the same sampler (50 DDIM steps, strength 0.75 -> 37 steps, CFG 7.5, SAG 0.75, 5 repeats per
image) on the stand-in's architecture: the SD-like UNet of `neurodecode.standin_ldm` over the tiny VD's VAE
(8 x 16 x 16 latents, 64 px), guided through the 12-block tiny CLIP (blocks 1-6). Timing does not depend on the weights,
so the models are random (no training); `--trained` uses the cached trained stand-ins instead. The guided run does
int(37 * 0.2) = 7 extra UNet + VAE-decoder + CLIP forward/backward passes per (image, repeat). Target: <= 1.6x.

    python benchmarks/guidance.py            # 8 images x 5 repeats, each condition timed twice, interleaved
    python benchmarks/guidance.py --quick    # 2 images x 5 repeats, once
"""
import argparse
import json
import os
import platform
import time

import numpy as np
import torch


def random_standin(seed=0):
    "The stand-in's architecture with random weights: (SDModel, vision tower)."
    from diffusers import AutoencoderKL
    from neurodecode.diffusion import TINY_VD_DEFAULTS, ddim_scheduler, random_tiny_clip
    from neurodecode.nd_targets import STANDIN_CLIP
    from neurodecode.sd_sampler import SDModel
    from neurodecode.standin_ldm import STANDIN_DEFAULTS, standin_unet
    torch.manual_seed(seed)
    ch = TINY_VD_DEFAULTS["vae_channels"]
    vae = AutoencoderKL(block_out_channels=ch, down_block_types=("DownEncoderBlock2D",) * len(ch),
                        up_block_types=("UpDecoderBlock2D",) * len(ch), latent_channels=TINY_VD_DEFAULTS["latent_channels"],
                        layers_per_block=1, norm_num_groups=8, sample_size=64, mid_block_add_attention=False)
    clip = random_tiny_clip(["a", "red", "ball"], seed=seed, image_size=64, width=64, heads=4,
                            patch_size=STANDIN_CLIP["patch_size"], vision_layers=STANDIN_CLIP["vision_layers"])
    unet = standin_unet(TINY_VD_DEFAULTS["latent_channels"], 16, 64, STANDIN_DEFAULTS["unet_channels"],
                        STANDIN_DEFAULTS["head_dim"])
    enc = lambda texts: torch.zeros(len(texts), 77, 64)
    return SDModel(unet, vae, ddim_scheduler({"snr_shift": 16.0}), encode_text=enc, device="cpu",
                   name="standin-random"), clip.vision_model


def trained_standin():
    from neurodecode.core import in_test
    from neurodecode.nd_targets import standin_corpus, standin_encoders
    from neurodecode.standin_ldm import train_standin_ldm
    im, cap = standin_corpus("default")
    clip, vae, scale = standin_encoders(im, cap, seed=0, device="cpu")
    return train_standin_ldm(im, cap, clip, vae, scale, device="cpu"), clip.vision_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None, help="timed runs per condition (interleaved)")
    ap.add_argument("--eta", type=float, default=0.2)
    ap.add_argument("--kappa", type=float, default=1e3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared machine more threads thrash)")
    ap.add_argument("--trained", action="store_true", help="use the cached trained stand-ins (trains them if absent)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from neurodecode.guidance import clip_features, guided_reconstruct, n_guided_steps
    n, rounds = a.images or (2 if a.quick else 8), a.rounds or (1 if a.quick else 2)
    model, vis = trained_standin() if a.trained else random_standin()
    phi = clip_features(vis, size=None)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, model.latent_channels, model.latent_size, model.latent_size, generator=g)
    c = torch.randn(n, 77, 64, generator=g) * 0.1
    with torch.no_grad():
        targets = [f.numpy() for f in phi(torch.rand(n, 3, 64, 64, generator=g))]
    kw = dict(n_repeats=5, seed=0, batch_size=10, quiet=True)
    guided_reconstruct(model, z[:1], c[:1], targets=[t[:1] for t in targets], features=phi, kappa=a.kappa, eta=a.eta,
                       **{**kw, "n_repeats": 1})  # warm-up
    times = {"unguided": [], "guided": []}
    for _ in range(rounds):
        for name, k in (("unguided", 0.0), ("guided", a.kappa)):
            t0 = time.perf_counter()
            guided_reconstruct(model, z, c, targets, phi, kappa=k, eta=a.eta, **kw)
            times[name].append((time.perf_counter() - t0) / n)
    un, gd = min(times["unguided"]), min(times["guided"])
    out = {"model": model.name, "images": n, "repeats": 5, "steps": "50 (37 run)", "eta": a.eta,
           "guided_steps": n_guided_steps(a.eta), "threads": a.threads, "rounds": rounds,
           "s_per_image_unguided": round(un, 3), "s_per_image_guided": round(gd, 3), "ratio": round(gd / un, 3),
           "all_s_per_image": {k: [round(x, 3) for x in v] for k, v in times.items()}, "target_ratio": 1.6,
           "load_avg": os.getloadavg(), "cpu": platform.processor() or platform.machine(), "gpu": "not measured"}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
