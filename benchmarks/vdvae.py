"""VDVAE benchmark (issue 5).

1. Latent extraction (encode_latents, 31 layers) and decoding (decode_latents, 31 layers, rest from the prior) with the
   imagenet64 architecture and random weights, in images per second, on CPU and on CUDA when there is one
   (float32, plus float16 and bfloat16 on CUDA).
2. With --train: the embedded default's targets, training time of the tiny config on 2,000 simulated scenes and the
   posterior-reconstruction SSIM (64 px, grayscale, Gaussian sigma 1.5, data range 1) on 64 held-out scenes
   (targets: <= 300 s on 2 CPU cores, SSIM >= 0.6), the KL per resolution (which latents the model uses) and the
   SSIM bound of a 16 x 16 image's worth of detail (the test scenes down- and upsampled); --beta sets the KL weight
   and --free-bits the KL floor per latent dimension of training (default: TRAIN_DEFAULTS).

The reference implementation (openai/vdvae) is not a package and cannot be fetched here, so no speed ratio against it
is printed; the latent layout is checked against its state dict instead (tests/test_vdvae.py).

    python benchmarks/vdvae.py                 # 1,000 images (slow on CPU: ~75 GFLOP per decoded image)
    python benchmarks/vdvae.py --quick         # 4 images, CPU only
    python benchmarks/vdvae.py --quick --train # reduced speed test, then the tiny training targets (full size)
"""
import argparse
import platform
import time

import numpy as np
import torch

from neurodecode import vdvae as V
from neurodecode.synthetic import make_scenes


def rate(fn, n):
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return out, n / dt, dt


def bench_imagenet64(n, batch_size, devices):
    images = make_scenes(n, seed=0, size=64).images
    rows = []
    for dev, dtype in devices:
        torch.manual_seed(0)
        m = V.VDVAE("imagenet64").to(dev, dtype).eval()
        V.encode_latents(m, images[:batch_size], 31, batch_size=batch_size)  # warm-up
        z, enc_ips, enc_s = rate(lambda: V.encode_latents(m, images, 31, batch_size=batch_size), n)
        z = np.nan_to_num(z)  # random weights can overflow in half precision; speed is what is measured here
        _, dec_ips, dec_s = rate(lambda: V.decode_latents(m, z, 31, batch_size=batch_size), n)
        rows.append((dev, str(dtype).replace("torch.", ""), enc_ips, enc_s, dec_ips, dec_s))
        print(f"imagenet64  {dev:5s} {rows[-1][1]:9s} encode_latents(31): {enc_ips:8.2f} img/s ({enc_s:.1f} s)"
              f"   decode_latents(31): {dec_ips:8.2f} img/s ({dec_s:.1f} s)   n={n} batch={batch_size}", flush=True)
        del m
        if dev == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench_train(n_train, steps, beta=1.0, free_bits=None):
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity
    train, test = make_scenes(n_train, seed=0, size=64).images, make_scenes(64, seed=1, size=64).images
    t, c = time.perf_counter(), time.process_time()
    fb = V.TRAIN_DEFAULTS["free_bits"] if free_bits is None else free_bits
    m = V.train_vdvae(train, "tiny", steps=steps, seed=0, cache=False, device="cpu", progress=True, beta=beta,
                      free_bits=fb)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    L = len(m.config.dec_layout())

    def ssim(rec):
        return float(np.mean([structural_similarity(rgb2gray(a), rgb2gray(b), gaussian_weights=True, sigma=1.5,
                                                    use_sample_covariance=False, data_range=1.0)
                              for a, b in zip(test, rec)]))
    res = {out: ssim(V.decode_latents(m, V.encode_latents(m, test, L), L, output=out)) for out in ("mean", "sample")}
    stage1 = ssim(V.decode_latents(m, V.encode_latents(m, test, 31), 31))
    from PIL import Image
    bound = {r: ssim(np.stack([np.asarray(Image.fromarray(t).resize((16, 16), Image.BOX).resize((64, 64), f))
                               for t in test])) for r, f in (("nearest", Image.NEAREST), ("bicubic", Image.BICUBIC))}
    kl = V.rate_by_block(m, test).groupby("resolution").kl_nats.sum().round(1).to_dict()
    print(f"tiny training: {dt:.0f} s wall, {dc:.0f} s CPU, for {steps or V.TRAIN_DEFAULTS['steps']} steps on {n_train} scenes "
          f"(target <= 300 s on 2 cores; torch threads {torch.get_num_threads()})")
    print(f"posterior-reconstruction SSIM (64 held-out scenes, 64 px): output mean {res['mean']:.3f}, "
          f"output sample {res['sample']:.3f} (target >= 0.6; beta {beta}, free bits {fb})")
    print(f"KL per image by resolution (nats): {kl}")
    print(f"bound from 16 x 16 detail: SSIM {bound['nearest']:.3f} (nearest) / {bound['bicubic']:.3f} (bicubic); "
          f"stage-1 ceiling (31 posterior latents, rest from the prior, sampled output): SSIM {stage1:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images for the imagenet64 speed test")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="4 images, CPU only (a reduced-size check)")
    ap.add_argument("--train", action="store_true", help="also measure the tiny training targets")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default TRAIN_DEFAULTS)")
    ap.add_argument("--beta", type=float, default=1.0, help="KL weight after warm-up for --train (1: the ELBO)")
    ap.add_argument("--free-bits", type=float, default=None,
                    help="KL floor per latent dimension for --train (default TRAIN_DEFAULTS; 0: the ELBO)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is faster on a loaded machine)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    n, bs = (4, 2) if a.quick else (a.n, a.batch_size)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    devices = [("cpu", torch.float32)]
    if torch.cuda.is_available() and not a.quick:
        devices += [("cuda", torch.float32), ("cuda", torch.float16), ("cuda", torch.bfloat16)]
    bench_imagenet64(n, bs, devices)
    if a.train:
        bench_train(2000, a.steps, a.beta, a.free_bits)


if __name__ == "__main__":
    main()
