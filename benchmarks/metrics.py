"""Benchmark of neurodecode.metrics on NSD's test-set size (982 image pairs), CPU only, no pretrained weights.

What it measures, each as images (pairs) per second, with the ratio to the reference implementation where one runs:

1. low-level metrics (PixCorr, SSIM, MSE+MAE, each alone and all in one pass) on 425 px ground truth vs 512 px
   reconstructions, both preprocessing variants; reference: brain-diffuser's evaluate_reconstruction.py loop;
2. two-way identification on random features of each network's size (AlexNet(2) 192×27×27, AlexNet(5) 256×13×13,
   InceptionV3 2048, CLIP 768); reference: brain-diffuser's pairwise_corr_all (np.corrcoef of the 2N×2N matrix);
3. correlation distance (EfficientNet-B1 1280, SwAV 2048);
4. retrieval (top-1 among 300, 30 draws) on N×D embeddings; reference: MindEye2's loop (torch, argsort);
5. forward passes of every metric network with seeded random weights at the variant's input size (the real
   checkpoints cost the same), on --forward-n images after one warm-up batch;
6. `evaluate` as the simulated default calls it: 200 pairs of 64 px images, low-level metrics + a stand-in encoder.

Usage:
    .venv/bin/python benchmarks/metrics.py --quick        # ~2-4 min on 2 shared cores: 64 pairs, 8 images per network
    .venv/bin/python benchmarks/metrics.py                # full size: 982 pairs, 64 images per network
(PixCorr, SSIM and MSE+MAE alone are timed on the reference loop's --ref-n pairs; the one-pass low-level run and
sections 2-4 on all --n pairs.)
Options: --n, --forward-n, --networks, --threads, --ref-max-gb (skip a reference that needs more memory).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


def row(label, n, secs, ref_secs=None, note=""):
    ratio = f"{ref_secs / secs:6.2f}x" if ref_secs else "     - "
    print(f"  {label:44s} {n:6d} {secs:9.2f} s {n / secs:10.1f}/s   vs ref {ratio}  {note}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced size to validate the script (64 pairs)")
    ap.add_argument("--n", type=int, default=None, help="image pairs (default 982; --quick: 64)")
    ap.add_argument("--forward-n", type=int, default=None, help="images per network forward pass (default 64; --quick 8)")
    ap.add_argument("--ref-n", type=int, default=None, help="pairs for the reference low-level loop (default min(n, 200))")
    ap.add_argument("--networks", default="alexnet,inceptionv3,efficientnet,swav,clip")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--ref-max-gb", type=float, default=3.0, help="skip a reference needing more memory than this")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    n = args.n or (64 if args.quick else 982)
    fwd_n = args.forward_n or (8 if args.quick else 64)
    ref_n = min(n, args.ref_n or 200)

    import torch
    from PIL import Image
    from scipy.spatial.distance import correlation
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    from neurodecode import metrics as M
    torch.set_num_threads(args.threads)
    print(f"neurodecode.metrics benchmark: {n} pairs, {fwd_n} images per network forward pass, torch threads "
          f"{args.threads}, CPU ({os.cpu_count()} cores visible; timings are inflated when the machine is shared)")
    print(f"  {'what':44s} {'items':>6s} {'time':>11s} {'rate':>12s}   {'ratio (ref time / ours)':s}")

    # 1. low-level ---------------------------------------------------------------------------------------------
    print("1. low-level metrics, 425 px GT vs 512 px reconstructions (pairs/s)")
    gt = M.demo_images(n, 425, seed=0)
    rec = M.demo_reconstructions(gt, 0.7, size=512, seed=1)

    def reference_loop(k):
        "brain-diffuser evaluate_reconstruction.py, on arrays instead of PNG files."
        ss, pc = [], []
        for i in range(k):
            gen_image = np.array(Image.fromarray(rec[i]).resize((425, 425))) / 255.0
            gt_image = gt[i] / 255.0
            pc.append(np.corrcoef(gt_image.reshape(1, -1), gen_image.reshape(1, -1))[0, 1])
            ss.append(structural_similarity(rgb2gray(gen_image), rgb2gray(gt_image), gaussian_weights=True,
                                            sigma=1.5, use_sample_covariance=False, data_range=1.0))
        return np.array(pc), np.array(ss)

    (ref_pc, ref_ss), t_ref = timed(reference_loop, ref_n)
    row("brain-diffuser reference loop (PixCorr+SSIM)", ref_n, t_ref)
    t_ref_pair = t_ref / ref_n
    got, t = timed(M.lowlevel_metrics, gt[:ref_n], rec[:ref_n], "brain-diffuser", ("PixCorr", "SSIM"), True, True)
    assert np.allclose(got["PixCorr"], ref_pc, atol=1e-12) and np.allclose(got["SSIM"], ref_ss, atol=1e-12)
    row("ours PixCorr+SSIM (same pairs, equal values)", ref_n, t, t_ref)
    for variant in ("brain-diffuser", "mindeye2"):
        for ms in (("PixCorr",), ("SSIM",), ("MSE", "MAE")):  # each metric alone, on the reference's pairs
            _, t = timed(M.lowlevel_metrics, gt[:ref_n], rec[:ref_n], variant, ms, False, True)
            row(f"{variant}: {'+'.join(ms)} alone", ref_n, t)
        _, t = timed(M.lowlevel_metrics, gt, rec, variant, M.LOWLEVEL, False, True)  # all four in one pass, all pairs
        ref = t_ref_pair * n if variant == "brain-diffuser" else None
        row(f"{variant}: {'+'.join(M.LOWLEVEL)}, one pass", n, t, ref, "(ref: its PixCorr+SSIM loop)" if ref else "")
    imgs_for_fwd = gt[:fwd_n].copy()
    del gt, rec
    gc.collect()

    # 2. two-way identification ----------------------------------------------------------------------------------
    print(f"2. two-way identification, N={n} (pairs/s)")
    rng = np.random.default_rng(0)
    dims = {"AlexNet(2)": 192 * 27 * 27, "AlexNet(5)": 256 * 13 * 13, "InceptionV3": 2048, "CLIP": 768}

    def pairwise_corr_all(ground_truth, predictions):
        r = np.corrcoef(ground_truth, predictions)
        r = r[:len(ground_truth), len(ground_truth):]
        congruents = np.diag(r)
        return np.mean(np.sum(r < congruents, 0)) / (len(ground_truth) - 1)

    for m, d in dims.items():
        g = rng.standard_normal((n, d), dtype=np.float32)
        r = (0.3 * g + rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
        ours, t = timed(M.two_way_identification, g, r)
        need_gb = 3 * (2 * n) * d * 8 / 1e9  # float64 stacked copy, centred copy, and the input cast
        if need_gb <= args.ref_max_gb:
            ref, t_r = timed(pairwise_corr_all, g, r)
            assert abs(ref - ours) < 1e-12, (ref, ours)
            row(f"{m} (D={d})", n, t, t_r, "equal values")
        else:
            row(f"{m} (D={d})", n, t, None, f"ref skipped: needs ~{need_gb:.1f} GB (--ref-max-gb)")
        del g, r
        gc.collect()

    # 3. correlation distance ------------------------------------------------------------------------------------
    print(f"3. correlation distance, N={n} (pairs/s)")
    for m, d in {"EfficientNet-B": 1280, "SwAV-ResNet50": 2048}.items():
        g, r = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        ours, t = timed(M.correlation_distance, g, r)
        ref = np.array([correlation(g[i], r[i]) for i in range(n)]).mean()
        assert abs(ref - ours) < 1e-12
        row(f"{m} (D={d})", n, t, None, "the same scipy loop as brain-diffuser")

    # 4. retrieval ------------------------------------------------------------------------------------------------
    k = min(300, n)
    print(f"4. retrieval, top-1 among {k}, 30 draws, N={n} (draws/s)")
    for label, d in {"ViT-L/14 embedding (768)": 768, "bigG tokens (256x1664)": 256 * 1664}.items():
        if 2 * n * d * 4 / 1e9 > args.ref_max_gb:
            print(f"  {label}: skipped (needs {2 * n * d * 4 / 1e9:.1f} GB; raise --ref-max-gb)")
            continue
        im = rng.standard_normal((n, d), dtype=np.float32)
        # noise sized so that retrieval is neither perfect nor at chance (own cosine ~ 3 noise SDs)
        br = (im + np.sqrt(d) / 3 * rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
        ours, t = timed(M.retrieval_top1, br, im, k, 30, 0)

        def me2():
            g = np.random.default_rng(0)
            f, b = [], []
            for _ in range(30):
                idx = g.choice(n, size=k, replace=False)
                emb = torch.nn.functional.normalize(torch.from_numpy(im[idx]), dim=-1)
                emb_ = torch.nn.functional.normalize(torch.from_numpy(br[idx]), dim=-1)
                labels = torch.arange(k)
                f.append((((emb_ @ emb.T).argsort(-1, descending=True)[:, 0]) == labels).float().mean().item())
                b.append((((emb @ emb_.T).argsort(-1, descending=True)[:, 0]) == labels).float().mean().item())
            return np.mean(f), np.mean(b)
        ref, t_r = timed(me2)
        assert np.allclose(ref, ours, atol=1e-6), (ref, ours)
        row(label, 30, t, t_r, f"fwd {ours[0]:.3f} bwd {ours[1]:.3f}, equal to MindEye2's loop")
        del im, br
        gc.collect()

    # 5. forward passes --------------------------------------------------------------------------------------------
    print(f"5. forward passes, seeded random weights, {fwd_n} images each after a warm-up batch (images/s)")
    nets = [s.strip() for s in args.networks.split(",") if s.strip()]  # --networks "" skips this section
    for variant in ("brain-diffuser", "mindeye2"):
        for net in nets:
            fx, t_build = timed(M.FeatureExtractor, net, variant, random_init=True, device="cpu")
            fx(imgs_for_fwd[:min(2, fwd_n)], batch_size=args.batch_size, quiet=True)  # warm-up
            _, t = timed(fx, imgs_for_fwd, args.batch_size, True)
            est = 2 * 982 / (fwd_n / t)
            row(f"{variant}: {M.NETWORKS[net].title} @{fx.size}px ({', '.join(fx.metrics)})", fwd_n, t, None,
                f"build {t_build:.1f} s; 982 pairs ~{est / 60:.1f} min")
            del fx
            gc.collect()

    # 6. evaluate, simulated-default shape ----------------------------------------------------------------------------
    ns = min(200, n)
    print(f"6. evaluate(): {ns} pairs of 64 px images, no weights (deep metrics unavailable), one stand-in encoder")
    g64 = M.demo_images(ns, 64, seed=3)
    r64 = M.demo_reconstructions(g64, 0.7, size=64, seed=4)
    enc = lambda ims: ims.reshape(len(ims), -1)[:, ::3].astype(np.float32)
    empty = tempfile.mkdtemp(prefix="no_weights_")  # so that real weights in $NEURODECODE_WEIGHTS are not used
    res, t = timed(M.evaluate, g64, r64, weights_dir=empty, cache=False, quiet=True,
                   extra_encoders={"CLIP (sim)": enc})
    row("evaluate(metrics='all') + 'CLIP (sim)'", ns, t, None,
        f"{int(res.notna().sum())} values, {len(res.attrs['unavailable'])} unavailable")
    os.rmdir(empty)
    print("done.")


if __name__ == "__main__":
    sys.exit(main())
