"""Paper 2's first `make reproduce` (subject 1, simulated default): an estimate from measured per-stage costs.

Counts the work the default profile of `neurodecode.nd_experiment` implies (decoder training samples, generated
image-repeats at the profile's DDIM steps, `STANDIN_STEPS`, counting once what `NDExperiment.reconstruct` reuses:
the ablations' guided and unguided rows and the κ × η grid's κ*, η .2 cell read the main comparison's PNGs) and
multiplies by costs measured here, on this machine, one thread (`BENCH_THREADS` to change):
decoder throughput (random betas and targets of the simulated default's shapes, h and epochs of the profile) and the
time per guided image-repeat of the stand-in architecture (`benchmarks/guidance.random_standin`, random weights;
time does not depend on them; unguided image-repeats are counted at the guided cost, an overestimate of about
1.2-1.4x for them), and the stand-in LDM's training steps (the UNet at `STANDIN_DEFAULTS`, forward, backward and
AdamW on a batch, times its `steps`). Not included (shared with paper 1's `make reproduce`, measured by its own
notebooks and benchmarks): simulating the data, training the tiny CLIP / VD stand-ins; nor the metrics.

    python benchmarks/nd_reproduce_budget.py            # measure, then print the estimate
    python benchmarks/nd_reproduce_budget.py --quick    # fewer trials and images (noisier)
    python benchmarks/nd_reproduce_budget.py --quick --steps 50   # the estimate at SD's 50 steps, for comparison

The decoder throughput is measured after a warm-up call (the first `train_decoder` of a process imports accelerate
and friends, several seconds that an estimate from 600 samples would count as training time).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def work(prof, n_train=3150, n_other=3):
    "(decoder samples {tokens, z}, image-repeats) the default profile implies for one subject."
    from neurodecode.nd_experiment import ETAS, KAPPA_FACTORS
    dec = prof["decoder_config"]["epochs"] * n_train * (n_other + 1 + 1)  # two-stage + no-pre-training
    zs = prof["z_config"]["epochs"] * n_train * (n_other + 1 + 1)
    cal = (len(prof["kappas"]) + 1) * prof["n_calibration"] * prof["calibration_repeats"]
    main = 2 * prof["max_test"] * prof["n_repeats"]
    abl = 5 * prof["max_test"] * prof["ablation_repeats"]  # guided and unguided: the main run's first repeats
    grid = (len(KAPPA_FACTORS) * len(ETAS) - 1) * prof["grid_images"] * prof["grid_repeats"]  # κ* at η .2, unguided: main
    return {"tokens": 7 * dec, "z": zs}, {"calibration": cal, "main": main, "ablations": abl, "grid": grid}


def decoder_rate(kind, cfg, n, V=4717, seed=0):
    from neurodecode.shared_training import train_decoder
    rng = np.random.default_rng(seed)
    w = {1: rng.standard_normal((64, V)).astype(np.float32)}, {1: rng.integers(0, 8, 64)}
    wt = rng.standard_normal((8,) + ((77, 64) if kind == "tokens" else (8, 16, 16))).astype(np.float16)
    train_decoder(*w, wt, "c" if kind == "tokens" else "z", kind, config={**cfg, "epochs": 1}, cache=False,
                  device="cpu", quiet=True)  # warm-up: imports
    shape = (77, 64) if kind == "tokens" else (8, 16, 16)
    t = rng.standard_normal((400,) + shape).astype(np.float16)
    X, R = {1: rng.standard_normal((n, V)).astype(np.float32)}, {1: rng.integers(0, 400, n)}
    t0 = time.time()
    train_decoder(X, R, t, "c" if kind == "tokens" else "z", kind, config={**cfg, "epochs": 2}, cache=False,
                  device="cpu", quiet=True)
    return 2 * n / (time.time() - t0)


def ldm_step_seconds(model, n_steps=3):
    "Seconds per training step of the stand-in UNet (batch and architecture of STANDIN_DEFAULTS)."
    from neurodecode.standin_ldm import STANDIN_DEFAULTS
    unet, b = model.unet.train(), STANDIN_DEFAULTS["batch_size"]
    frozen = [p for p in unet.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(b, 8, 16, 16, generator=g), torch.randn(b, 77, 64, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    times = []
    for _ in range(n_steps + 1):
        t0 = time.time()
        loss = torch.nn.functional.mse_loss(unet(z, t, encoder_hidden_states=c).sample, z)
        opt.zero_grad(); loss.backward(); opt.step()
        times.append(time.time() - t0)
    unet.eval()
    for p in frozen:
        p.requires_grad_(False)
    return float(np.median(times[1:])), STANDIN_DEFAULTS["steps"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the profile's)")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    from guidance import random_standin
    from neurodecode.guidance import clip_features, guided_reconstruct
    from neurodecode.nd_experiment import ND_PROFILES
    prof = dict(ND_PROFILES["default"])
    steps = prof["steps"] = a.steps or prof["steps"]
    samples, images = work(prof)
    n = 600 if a.quick else 3150
    rate = {"tokens": decoder_rate("tokens", prof["decoder_config"], n), "z": decoder_rate("z", prof["z_config"], n)}
    model, vis = random_standin()
    ldm_s, ldm_steps = ldm_step_seconds(model, 3 if a.quick else 10)
    phi = clip_features(vis, size=None)
    N, Rr = (1, 2) if a.quick else (2, 5)
    g = torch.Generator().manual_seed(0)
    z, c = torch.randn(N, 8, 16, 16, generator=g), torch.randn(N, 77, 64, generator=g)
    with torch.no_grad():
        tg = [f.numpy() for f in phi(torch.rand(N, 3, 64, 64, generator=g))]
    t0 = time.time()
    guided_reconstruct(model, z, c, tg, phi, kappa=1e3, eta=0.2, steps=steps, n_repeats=Rr, output="uint8", quiet=True)
    per = (time.time() - t0) / (N * Rr)
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} CPUs; {torch.get_num_threads()} thread(s)")
    print(f"decoder throughput: tokens {rate['tokens']:.0f} samples/s, z {rate['z']:.0f} samples/s")
    print(f"generation: {per:.2f} s per guided image-repeat ({steps} DDIM steps, eta .2, {N} x {Rr} batched)")
    t_dec = {k: samples[k] / rate[k] for k in samples}
    t_gen = {k: v * per for k, v in images.items()}
    for k, v in t_dec.items():
        print(f"  decoders {k}: {samples[k]:,} samples -> {v / 60:.1f} min")
    for k, v in t_gen.items():
        print(f"  generation {k}: {images[k]} image-repeats -> {v / 60:.1f} min")
    print(f"  stand-in LDM training: {ldm_steps} steps x {ldm_s:.2f} s -> {ldm_steps * ldm_s / 60:.1f} min")
    dec, gen, ldm = sum(t_dec.values()), sum(t_gen.values()), ldm_steps * ldm_s
    print(f"paper 2, subject 1, one core: decoders + stand-in LDM + generation = {(dec + ldm + gen) / 60:.1f} min")
    print(f"paper 2, subject 1, two cores (`NDExperiment.ldm` trains the LDM in a side process while the decoders "
          f"train): max(decoders, LDM) + generation = {(max(dec, ldm) + gen) / 60:.1f} min "
          "(plus the tiny CLIP / VD shared with paper 1, and the metrics; see the docstring)")


if __name__ == "__main__":
    main()
