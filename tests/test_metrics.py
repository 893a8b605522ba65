"""neurodecode.metrics against the reference code it follows.

- PixCorr and SSIM equal brain-diffuser's `evaluate_reconstruction.py` loop (PIL, numpy, scikit-image) and MindEye2's
  tensor loop on the PNG fixtures, including the grayscale conversion and the resizing;
- two-way identification equals brain-diffuser's `pairwise_corr_all` and a 3×3 case worked by hand;
- retrieval on constructed embeddings, and against MindEye2's loop on the same draws;
- every layer hook has the shape the reference states (random-weight networks);
- the unavailable-metric path and its message.
The full-size random CLIP ViT-L/14 (1.2 GB, ~30 s on CPU) runs only with NEURODECODE_SLOW_TESTS=1.
"""
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import correlation
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

from neurodecode import metric_networks as MN
from neurodecode import metrics as M
from neurodecode.core import NotFoundError
from neurodecode.report import table_latex, table_markdown

FIX = Path(__file__).resolve().parent / "fixtures" / "metrics"
SLOW = bool(os.environ.get("NEURODECODE_SLOW_TESTS"))


def load_pngs(prefix):
    return [np.array(Image.open(FIX / f"{prefix}_{i}.png")) for i in range(3)]


@pytest.fixture(scope="module")
def pngs():
    gt, rec = load_pngs("gt"), load_pngs("rec")
    assert gt[0].shape == (425, 425, 3) and rec[0].shape == (512, 512, 3) and gt[0].dtype == np.uint8
    return np.stack(gt), np.stack(rec)


# ---------------------------------------------------------------------------------------------------------------
# Low-level metrics


def brain_diffuser_loop(i):
    "brain-diffuser scripts/evaluate_reconstruction.py, inlined (files instead of its paths)."
    gen_image = Image.open(FIX / f"rec_{i}.png").resize((425, 425))  # PIL's default filter (bicubic)
    gt_image = Image.open(FIX / f"gt_{i}.png")
    gen_image = np.array(gen_image) / 255.0
    gt_image = np.array(gt_image) / 255.0
    pixcorr_res = np.corrcoef(gt_image.reshape(1, -1), gen_image.reshape(1, -1))[0, 1]
    gen_image, gt_image = rgb2gray(gen_image), rgb2gray(gt_image)
    ssim_res = structural_similarity(gen_image, gt_image, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=1.0)
    return pixcorr_res, ssim_res


def test_lowlevel_equals_brain_diffuser_loop(pngs):
    gt, rec = pngs
    ref = np.array([brain_diffuser_loop(i) for i in range(3)])
    got = M.lowlevel_metrics(gt, rec, "brain-diffuser", per_image=True)
    np.testing.assert_allclose(got["PixCorr"], ref[:, 0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(got["SSIM"], ref[:, 1], rtol=0, atol=1e-13)
    assert M.pixcorr(gt, rec) == pytest.approx(ref[:, 0].mean(), abs=1e-13)
    assert M.ssim(gt, rec) == pytest.approx(ref[:, 1].mean(), abs=1e-13)
    # a real difference between the pairs, so the comparison above is not vacuous
    assert 0.2 < ref[:, 0].min() < 0.99 and 0.1 < ref[:, 1].min() < 0.99


def test_lowlevel_accepts_lists_and_float_images(pngs):
    gt, rec = pngs
    ref = M.lowlevel_metrics(gt, rec)
    assert M.lowlevel_metrics(list(gt), [Image.fromarray(r) for r in rec]) == ref
    # brain-diffuser scores the saved 8-bit PNG: floats are rounded to 8 bits first
    got = M.lowlevel_metrics(gt / 255.0, rec.astype(np.float32) / 255)
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-12)


def test_ssim_uses_rgb2gray_not_channel_mean(pngs):
    "The grayscale conversion is skimage's luminance (0.2125 R + 0.7154 G + 0.0721 B), not an RGB average."
    gt, rec = pngs
    g = gt[0] / 255.0
    r = np.array(Image.fromarray(rec[0]).resize((425, 425), Image.BICUBIC)) / 255.0
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    want = structural_similarity(rgb2gray(r), rgb2gray(g), **kw)
    np.testing.assert_allclose(rgb2gray(g), g @ [0.2125, 0.7154, 0.0721], atol=1e-12)
    assert M.ssim(gt[:1], rec[:1]) == pytest.approx(want, abs=1e-13)
    mean_gray = structural_similarity(r.mean(-1), g.mean(-1), **kw)
    assert abs(mean_gray - want) > 1e-3  # the conversion matters, so the test above can fail
    # and the settings matter: uniform 7×7 window, sample covariance
    assert abs(structural_similarity(rgb2gray(r), rgb2gray(g), data_range=1.0) - want) > 1e-3


def test_ssim_equals_formula_in_numpy(pngs):
    "SSIM written out (paper 1 eq. 8, Gaussian σ 1.5 truncated at 3.5σ, population covariance, K1 .01, K2 .03)."
    from scipy.ndimage import gaussian_filter
    gt, rec = pngs
    x = rgb2gray(gt[1] / 255.0)
    y = rgb2gray(np.array(Image.fromarray(rec[1]).resize((425, 425), Image.BICUBIC)) / 255.0)
    f = lambda a: gaussian_filter(a, 1.5, truncate=3.5, mode="reflect")
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    pad = (2 * int(3.5 * 1.5 + 0.5)) // 2  # scikit-image crops the border before averaging
    want = s[pad:-pad, pad:-pad].mean()
    assert M.ssim(gt[1:2], rec[1:2]) == pytest.approx(want, abs=1e-10)


def test_small_images_are_resized_to_425():
    "Simulated 64 px images: both sets go to 425 px with PIL bicubic before PixCorr and SSIM."
    gt = M.demo_images(3, 64, seed=2)
    rec = M.demo_reconstructions(gt, 0.6, size=64, seed=3)
    up = lambda a: np.array(Image.fromarray(a).resize((425, 425), Image.BICUBIC)) / 255.0
    for i in range(3):
        g, r = up(gt[i]), up(rec[i])
        got = M.lowlevel_metrics(gt[i:i + 1], rec[i:i + 1])
        assert got["PixCorr"] == pytest.approx(np.corrcoef(g.reshape(1, -1), r.reshape(1, -1))[0, 1], abs=1e-13)
        assert got["SSIM"] == pytest.approx(structural_similarity(
            rgb2gray(r), rgb2gray(g), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1.0), abs=1e-13)
        assert got["MSE"] == pytest.approx(np.mean((g - r) ** 2), abs=1e-15)
        assert got["MAE"] == pytest.approx(np.mean(np.abs(g - r)), abs=1e-15)


def test_lowlevel_equals_mindeye2_loop(pngs):
    "MindEye2 final_evaluations: float tensors at 256, torchvision Resize(425, bilinear) without antialias."
    from torchvision import transforms
    gt, rec = pngs
    to256 = transforms.Resize((256, 256), interpolation=transforms.InterpolationMode.BILINEAR, antialias=False)
    all_images = to256(torch.from_numpy(gt).permute(0, 3, 1, 2).float() / 255).contiguous()  # evals/all_images.pt
    all_recons = to256(torch.from_numpy(rec).permute(0, 3, 1, 2).float() / 255).contiguous()
    preprocess = transforms.Compose([transforms.Resize(425, interpolation=transforms.InterpolationMode.BILINEAR,
                                                       antialias=False)])
    all_images_flattened = preprocess(all_images).reshape(len(all_images), -1).cpu()
    all_recons_flattened = preprocess(all_recons).view(len(all_recons), -1).cpu()
    pix = [np.corrcoef(all_images_flattened[i], all_recons_flattened[i])[0][1] for i in range(3)]
    img_gray = rgb2gray(preprocess(all_images).permute((0, 2, 3, 1)).cpu().numpy())
    recon_gray = rgb2gray(preprocess(all_recons).permute((0, 2, 3, 1)).cpu().numpy())
    ss = [structural_similarity(r, im, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=1.0) for im, r in zip(img_gray, recon_gray)]
    got = M.lowlevel_metrics(gt, rec, "mindeye2", per_image=True)
    np.testing.assert_allclose(got["PixCorr"], pix, atol=1e-6)
    np.testing.assert_allclose(got["SSIM"], ss, atol=1e-6)
    bd = M.lowlevel_metrics(gt, rec, "brain-diffuser", per_image=True)
    assert np.abs(bd["SSIM"] - got["SSIM"]).max() > 1e-3  # the variants really differ


def test_image_validation_messages(pngs):
    gt, rec = pngs
    with pytest.raises(ValueError, match="channels first"):
        M.pixcorr(gt.transpose(0, 3, 1, 2), rec)
    with pytest.raises(ValueError, match="same number of images; got 3 and 2"):
        M.ssim(gt, rec[:2])
    with pytest.raises(ValueError, match="divide by 255"):
        M.ssim(gt.astype(float), rec)
    with pytest.raises(TypeError, match="uint8, or float"):
        M.ssim(gt.astype(np.int32), rec)
    with pytest.raises(ValueError, match="must have the same shape"):
        M.mse(np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------------------------------------------------------
# Two-way identification and correlation distance


def pairwise_corr_all(ground_truth, predictions):
    "brain-diffuser scripts/evaluate_reconstruction.py, inlined (without its binomial p-value)."
    r = np.corrcoef(ground_truth, predictions)
    r = r[:len(ground_truth), len(ground_truth):]
    congruents = np.diag(r)
    success = r < congruents
    success_cnt = np.sum(success, 0)
    return np.mean(success_cnt) / (len(ground_truth) - 1)


def test_two_way_hand_worked_3x3():
    # zero-mean vectors of norm √2, so correlations are dot products / 2: corr(a,b) = 1/2, corr(a,c) = 1/2,
    # corr(b,c) = -1/2
    a, b, c = [1, 0, -1], [0, 1, -1], [1, -1, 0]
    gt = np.array([a, b, c], float)
    rec = np.array([a, c, b], float) * 3 - 7  # scale and offset change no correlation
    # r[i, j] = corr(gt_i, rec_j):   rec a   rec c   rec b
    #                       gt a       1      1/2     1/2
    #                       gt b      1/2    -1/2      1
    #                       gt c      1/2      1     -1/2
    # column 0: 1/2 < 1 twice -> 2/2; column 1 (diag -1/2): 1/2 and 1 are not < -1/2 -> 0/2;
    # column 2 (diag -1/2): 1/2 and 1 are not < -1/2 -> 0/2.  Mean = (1 + 0 + 0) / 3 = 1/3.
    np.testing.assert_allclose(M.two_way_identification(gt, rec, per_image=True), [1.0, 0.0, 0.0])
    assert M.two_way_identification(gt, rec) == pytest.approx(1 / 3, abs=1e-15)
    assert M.two_way_identification(gt, rec) == pytest.approx(pairwise_corr_all(gt, rec), abs=1e-15)
    # the right assignment wins everything
    assert M.two_way_identification(gt, rec[[0, 2, 1]]) == 1.0


def test_two_way_ties_lose():
    "Strict <: a reconstruction equally correlated with its own and another ground truth does not win that pair."
    gt = np.array([[1, 0, -1], [1, 0, -1], [0, 1, -1]], float)  # gt 0 and gt 1 identical
    rec = gt.copy()
    np.testing.assert_allclose(M.two_way_identification(gt, rec, per_image=True), [0.5, 0.5, 1.0])
    assert M.two_way_identification(gt, rec) == pytest.approx(pairwise_corr_all(gt, rec), abs=1e-15)


def test_two_way_identical_and_unrelated():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(300, 50))
    assert M.two_way_identification(F, F) == 1.0
    vals = [M.two_way_identification(F, rng.normal(size=F.shape)) for _ in range(5)]
    # unrelated: each reconstruction wins about half of its 299 comparisons; the mean of 300 such is within a few %
    assert abs(np.mean(vals) - 0.5) < 0.03 and all(abs(v - 0.5) < 0.06 for v in vals)
    assert M.two_way_identification(F, F + 0.5 * rng.normal(size=F.shape)) > 0.95


@pytest.mark.parametrize("shape,dtype", [((40, 192, 5, 5), np.float32), ((25, 7), np.float64), ((2, 3), np.float32)])
def test_two_way_equals_pairwise_corr_all(shape, dtype):
    rng = np.random.default_rng(shape[0])
    g = rng.normal(size=shape).astype(dtype)
    r = (0.6 * g + rng.normal(size=shape)).astype(dtype)
    want = pairwise_corr_all(g.reshape(len(g), -1), r.reshape(len(r), -1))
    assert M.two_way_identification(g, r) == pytest.approx(want, abs=1e-15)


def test_corr_rows_chunks_equal_corrcoef():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 5000)).astype(np.float32), rng.normal(size=(30, 5000)).astype(np.float32) + 3
    want = np.corrcoef(a, b)[:30, 30:]
    for mb in (1, 128):  # 1 MB: many chunks over the feature axis
        np.testing.assert_allclose(M._corr_rows(a, b, chunk_mb=mb), want, atol=1e-12)


def test_correlation_distance_equals_scipy():
    rng = np.random.default_rng(2)
    g, r = rng.normal(size=(20, 1280)), rng.normal(size=(20, 1280))
    r[:5] = g[:5] * 2 + 1  # perfectly correlated pairs: distance 0
    want = np.array([correlation(g[i], r[i]) for i in range(20)])
    np.testing.assert_allclose(M.correlation_distance(g, r, per_image=True), want, atol=1e-15)
    assert M.correlation_distance(g, r) == pytest.approx(want.mean(), abs=1e-15)
    assert M.correlation_distance(g[:5], r[:5]) == pytest.approx(0, abs=1e-12)
    assert M.correlation_distance(g, -g) == pytest.approx(2, abs=1e-12)


def test_feature_validation():
    with pytest.raises(ValueError, match="must have the same shape"):
        M.two_way_identification(np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 2 images"):
        M.two_way_identification(np.ones((1, 3)), np.ones((1, 3)))
    with pytest.raises(ValueError):
        M.correlation_distance(np.full((3, 3), np.nan), np.ones((3, 3)))


# ---------------------------------------------------------------------------------------------------------------
# Retrieval


def mindeye2_retrieval(brain, image, draws):
    "MindEye2 final_evaluations cell 11 on given draws: flatten, L2-normalise, cosine, top-1 by argsort."
    fwds, bwds = [], []
    for idx in draws:
        emb = torch.nn.functional.normalize(torch.from_numpy(image[idx]).reshape(len(idx), -1).float(), dim=-1)
        emb_ = torch.nn.functional.normalize(torch.from_numpy(brain[idx]).reshape(len(idx), -1).float(), dim=-1)
        labels = torch.arange(len(emb))
        bwd_sim, fwd_sim = emb @ emb_.T, emb_ @ emb.T
        top1 = lambda sim: (sim.argsort(dim=-1, descending=True)[:, 0] == labels).float().mean().item()
        fwds.append(top1(fwd_sim)), bwds.append(top1(bwd_sim))
    return np.mean(fwds), np.mean(bwds)


def test_retrieval_constructed():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(400, 32))
    assert M.retrieval_top1(E, E) == (1.0, 1.0)
    assert M.retrieval_top1(3 * E, E) == (1.0, 1.0)  # scale-free (cosine)
    fwd, bwd = M.retrieval_top1(rng.normal(size=E.shape), E)
    assert fwd < 0.015 and bwd < 0.015  # chance 1/300
    # hand case: images at e0, e1, e2; brain 1 leans toward image 0 -> forward 2/3, backward 3/3
    brain = np.array([[1, 0, 0], [1, .5, 0], [0, 0, 1]], float)
    assert M.retrieval_top1(brain, np.eye(3), n_candidates=3, n_repeats=1) == pytest.approx((2 / 3, 1.0))
    # swapping the roles swaps the directions: image 1 leans toward brain 0 -> forward 3/3, backward 2/3
    assert M.retrieval_top1(np.eye(3), brain, n_candidates=3, n_repeats=1) == pytest.approx((1.0, 2 / 3))


def test_retrieval_equals_mindeye2_loop_on_same_draws():
    rng = np.random.default_rng(5)
    image = rng.normal(size=(500, 4, 16)).astype(np.float32)  # N×tokens×D, flattened as MindEye2 does
    brain = (image + 3.0 * rng.normal(size=image.shape)).astype(np.float32)
    g = np.random.default_rng(11)
    draws = [g.choice(500, size=300, replace=False) for _ in range(30)]
    want = mindeye2_retrieval(brain, image, draws)
    got = M.retrieval_top1(brain, image, 300, 30, seed=11)
    assert got == pytest.approx(want, abs=1e-6)  # MindEye2 averages in float32
    assert 0.05 < got[0] < 0.95  # neither trivial nor chance
    # MindEye2's own draws: np.random.seed(42) then np.random.choice, replayed with a RandomState(42)
    np.random.seed(42)
    legacy = [np.random.choice(np.arange(500), size=300, replace=False) for _ in range(30)]
    assert M.retrieval_top1(brain, image, seed=np.random.RandomState(42)) == pytest.approx(
        mindeye2_retrieval(brain, image, legacy), abs=1e-6)


def test_retrieval_validation():
    E = np.ones((50, 4))
    with pytest.raises(ValueError, match="n_candidates=300 is more than the 50 samples"):
        M.retrieval_top1(E, E)
    E[3] = 0
    with pytest.raises(ValueError, match="norm 0"):
        M.retrieval_top1(E, E, n_candidates=10)


# ---------------------------------------------------------------------------------------------------------------
# Networks: hook shapes (random weights) and agreement with torchvision's feature extractor (MindEye2's route)

# AlexNet at S px: conv1 (k11, s4, p2) -> (S+4-11)//4+1, maxpool (3, 2) halves it, conv2 keeps it (features[4]);
# another maxpool, then conv3-5 keep it (features[11]).
def _alex(s):
    c1 = (s + 4 - 11) // 4 + 1
    p1 = (c1 - 3) // 2 + 1
    return (192, p1, p1), (256, (p1 - 3) // 2 + 1, (p1 - 3) // 2 + 1)


STATED = {  # reference §1.6: 192×27×27, 256×13×13, 2048, 1280, 2048 at 224 px
    "brain-diffuser": {"AlexNet(2)": (192, 27, 27), "AlexNet(5)": (256, 13, 13), "InceptionV3": (2048, 1, 1),
                       "EfficientNet-B": (1280, 1, 1), "SwAV-ResNet50": (2048, 1, 1)},
    "mindeye2": {"AlexNet(2)": _alex(256)[0], "AlexNet(5)": _alex(256)[1], "InceptionV3": (2048, 1, 1),
                 "EfficientNet-B": (1280, 1, 1), "SwAV-ResNet50": (2048, 1, 1)},
}
NODES = {"alexnet": ["features.4", "features.11"], "inceptionv3": ["avgpool"], "efficientnet": ["avgpool"],
         "swav": ["avgpool"]}


def test_alexnet_shape_formula():
    assert _alex(224) == ((192, 27, 27), (256, 13, 13))
    assert _alex(256) == ((192, 31, 31), (256, 15, 15))


@pytest.mark.parametrize("net,pp", [("alexnet", "brain-diffuser"), ("alexnet", "mindeye2"),
                                    ("inceptionv3", "brain-diffuser"), ("efficientnet", "brain-diffuser"),
                                    ("swav", "brain-diffuser")])
def test_hook_shapes_and_layers(net, pp):
    "Shapes at the variant's input size; the mindeye2 sizes change only AlexNet's maps (pooled layers stay 1×1)."
    from torchvision.models.feature_extraction import create_feature_extractor
    x = M.demo_images(2 if net == "alexnet" else 1, 64, seed=4)  # one image through the heavier networks
    fx = M.FeatureExtractor(net, pp, random_init=True, device="cpu")
    feats = fx(x, batch_size=2)
    assert {m: f.shape[1:] for m, f in feats.items()} == {m: STATED[pp][m] for m in M.NETWORKS[net].metrics}
    assert all(f.dtype == np.float32 and len(f) == len(x) for f in feats.values())
    # the hooked modules are the nodes MindEye2 names in create_feature_extractor (same weights, same input)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ext = create_feature_extractor(fx.model, return_nodes=NODES[net]).eval()
    with torch.no_grad():
        ref = ext(MN._net_input(x, fx.size, fx.preprocessing, "imagenet"))
    for m, node in zip(M.NETWORKS[net].metrics, NODES[net]):
        r = ref[node].numpy()
        np.testing.assert_allclose(feats[m], r, rtol=1e-4, atol=1e-5 * np.abs(r).max())
    if net == "alexnet":
        assert (feats["AlexNet(2)"] >= 0).all() and (feats["AlexNet(5)"] >= 0).all()  # after the ReLUs
        assert len(fx(x, batch_size=1)["AlexNet(5)"]) == 2  # batches are concatenated in order
    if net == "inceptionv3":  # built as torchvision builds it for pretrained weights
        assert fx.model.transform_input and not fx.model.training


def test_clip_tiny_config_path():
    from transformers import CLIPVisionConfig
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=37, projection_dim=16, num_hidden_layers=2,
                           num_attention_heads=4, image_size=224, patch_size=32, hidden_act="quick_gelu")
    fx = M.FeatureExtractor("clip", random_init=True, device="cpu", clip_config=cfg)
    x = M.demo_images(2, 64, seed=4)
    f = fx(x)["CLIP"]
    assert f.shape == (2, 16)
    with torch.no_grad():  # the projected CLS embedding of CLIP-normalised 224 px input
        want = fx.model(pixel_values=MN._net_input(x, 224, fx.preprocessing, "clip")).image_embeds.numpy()
    np.testing.assert_allclose(f, want, atol=1e-6)


@pytest.mark.skipif(not SLOW, reason="full ViT-L/14 with random weights (1.2 GB); set NEURODECODE_SLOW_TESTS=1")
def test_clip_vitl14_shape():
    fx = M.FeatureExtractor("clip", random_init=True, device="cpu")
    assert fx(M.demo_images(1, 64))["CLIP"].shape == (1, 768)


# ---------------------------------------------------------------------------------------------------------------
# The unavailable-metric path


def test_missing_weights_are_unavailable_with_reason(tmp_path):
    gt = M.demo_images(4, 48, seed=1)
    rec = M.demo_reconstructions(gt, 0.7, size=64)
    empty = tmp_path / "weights"
    empty.mkdir()
    res = M.evaluate(gt, rec, weights_dir=empty, cache=False, name="sim")
    deep = ["AlexNet(2)", "AlexNet(5)", "InceptionV3", "CLIP", "EfficientNet-B", "SwAV-ResNet50"]
    assert res[deep].isna().all() and res[["SSIM", "PixCorr", "MSE", "MAE"]].notna().all()
    assert list(res.index) == M.PAPER_ORDER
    why = res.attrs["unavailable"]
    assert set(why) == set(deep) | {"Image retrieval", "Brain retrieval"}
    for m in deep:
        f = M.weight_file(M.METRICS[m].network)
        assert f"({f}) not found. Looked in:" in why[m] and str(empty / f) in why[m] and "Fix: download" in why[m]
    assert "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar" in why["SwAV-ResNet50"]
    assert "pass brain_emb=" in why["Image retrieval"]
    note = M.unavailable_note(res).splitlines()
    assert len(note) == 8 and note[0].startswith("AlexNet(2): unavailable: AlexNet weights for AlexNet(2), AlexNet(5) "
                                                 "(alexnet-owt-7be5be79.pth) not found. Fix: download https://")
    assert res.attrs["weights"] == {} and res.attrs["preprocessing"] == "brain-diffuser"
    # the table keeps every column, '–' where unavailable, and the reasons; drop_empty=True shows only what was computed
    t = M.metrics_table([res])
    assert t["CLIP ↑"].tolist() == ["–"] and t["SSIM ↑"].tolist() != ["–"]
    assert "CLIP" in t.attrs["unavailable"]["sim"]
    assert list(M.metrics_table([res], drop_empty=True).columns) == ["SSIM ↑", "PixCorr ↑", "MSE ↓", "MAE ↓"]
    from neurodecode.report import unavailable_summary
    line = unavailable_summary(t.attrs["unavailable"])
    assert "\n" not in line and line.count("alexnet-owt-7be5be79.pth") == 1 and "swav_800ep_pretrain.pth.tar" in line
    # or raise instead
    with pytest.raises(NotFoundError, match="alexnet-owt-7be5be79.pth"):
        M.evaluate(gt, rec, metrics=["AlexNet(2)"], weights_dir=empty, on_missing="raise", cache=False)


def test_missing_weights_never_fall_back_to_random(tmp_path, monkeypatch):
    "Even with NEURODECODE_WEIGHTS unset and nothing anywhere, no network is built: the value stays NaN."
    built = []

    def no_build(*a, **k):
        built.append(a)
        raise AssertionError("a network was built without its weights")

    monkeypatch.setattr(MN, "build_network", no_build)  # what FeatureExtractor calls
    gt = M.demo_images(3, 32)
    res = M.evaluate(gt, gt, metrics=["AlexNet(5)", "CLIP"], cache=False)
    assert res.isna().all() and not built and set(res.attrs["unavailable"]) == {"AlexNet(5)", "CLIP"}


def test_wrong_file_is_unavailable_with_warning(tmp_path):
    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes(b"not a checkpoint")
    gt = M.demo_images(3, 32)
    with pytest.warns(UserWarning, match="sha256 does not start with 7be5be79"):
        res = M.evaluate(gt, gt, metrics=["AlexNet(2)", "SSIM"], weights_dir=tmp_path, cache=False)
    assert np.isnan(res["AlexNet(2)"]) and res["SSIM"] == pytest.approx(1.0)
    assert "Download it again" in res.attrs["unavailable"]["AlexNet(2)"]


def test_weights_present_are_used_and_cached(tmp_path):
    "A (random-weight) file under the reference name is loaded and scored; a second call reads the cached features."
    import torchvision
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alexnet-owt-7be5be79.pth")
    gt = M.demo_images(6, 48, seed=1)
    rec = M.demo_reconstructions(gt, 0.7, size=64)
    kw = dict(metrics=["AlexNet(2)", "AlexNet(5)"], weights_dir=tmp_path, verify=False, device="cpu",
              cache=tmp_path / "c")
    r1 = M.evaluate(gt, rec, **kw)
    fx = M.FeatureExtractor("alexnet", weights_dir=tmp_path, verify=False, device="cpu")
    fg, fr = fx(gt), fx(rec)
    for m in ("AlexNet(2)", "AlexNet(5)"):
        assert r1[m] == pytest.approx(pairwise_corr_all(fg[m].reshape(6, -1), fr[m].reshape(6, -1)), abs=1e-12)
    assert r1.attrs["weights"] == {m: "alexnet-owt-7be5be79.pth" for m in ("AlexNet(2)", "AlexNet(5)")}
    assert len(list((tmp_path / "c" / "metric_features").glob("*.npz"))) == 2  # ground truth and reconstructions
    r2 = M.evaluate(gt, rec, **kw)
    assert r2.tolist() == r1.tolist()
    assert len(list((tmp_path / "c" / "metric_features").glob("*.npz"))) == 2  # read back, not recomputed


def test_mindeye2_needs_efficientnet_v2_file(tmp_path):
    (tmp_path / "efficientnet_b1_rwightman-bac287d4.pth").write_bytes(b"V1 file (not read)")
    gt = M.demo_images(3, 32)
    r = M.evaluate(gt, gt, metrics=["EfficientNet-B"], preprocessing="mindeye2", weights_dir=tmp_path, cache=False)
    assert np.isnan(r["EfficientNet-B"]) and "efficientnet_b1-c27df63c.pth" in r.attrs["unavailable"]["EfficientNet-B"]
    assert M.weight_file("efficientnet") == "efficientnet_b1_rwightman-bac287d4.pth"


def test_extra_encoders_small_images_and_labels():
    "The simulated default: 64 px images, a stand-in encoder under its own label (torch output accepted)."
    gt = M.demo_images(20, 64, seed=3)
    rec = M.demo_reconstructions(gt, 0.8, size=64)
    seen = []

    def enc(ims):
        seen.append(ims.shape)
        return torch.from_numpy(ims.reshape(len(ims), -1)[:, ::5].astype(np.float32)).requires_grad_()

    res = M.evaluate(gt, rec, metrics="low-level", extra_encoders={"CLIP (sim)": enc,
                                                                  "SwAV (sim)": (enc, "distance")}, cache=False)
    assert seen == [(20, 64, 64, 3)] * 4  # the encoder gets the images as given
    flat = lambda a: a.reshape(len(a), -1)[:, ::5].astype(np.float32)
    assert res["CLIP (sim)"] == pytest.approx(M.two_way_identification(flat(gt), flat(rec)))
    assert res["SwAV (sim)"] == pytest.approx(M.correlation_distance(flat(gt), flat(rec)), abs=1e-6)
    assert list(res.index) == ["SSIM", "PixCorr", "CLIP (sim)", "SwAV (sim)", "MSE", "MAE"]
    t = M.metrics_table({"sim": res})
    assert t.loc["sim", "CLIP (sim) ↑"].endswith("%") and "SwAV (sim) ↓" in t.columns
    with pytest.raises(ValueError, match="give a stand-in network its own label"):
        M.evaluate(gt, rec, extra_encoders={"CLIP": enc})
    with pytest.raises(ValueError, match="returned 3 and 3 feature rows for 20 images"):
        M.evaluate(gt, rec, metrics="low-level", extra_encoders={"X (sim)": lambda ims: np.ones((3, 2))}, cache=False)


def test_evaluate_retrieval_and_argument_checks():
    rng = np.random.default_rng(0)
    gt = M.demo_images(12, 32)
    emb = rng.normal(size=(12, 8))
    r = M.evaluate(gt, gt, metrics=["Image retrieval", "Brain retrieval"], brain_emb=emb, image_emb=emb, cache=False)
    assert r.tolist() == [1.0, 1.0] and "among all 12 samples" in r.attrs["notes"][0]
    with pytest.raises(ValueError, match="metric must be one of"):
        M.evaluate(gt, gt, metrics=["CLIP (sim)"])
    with pytest.raises(ValueError, match="preprocessing must be one of 'brain-diffuser', 'mindeye2'"):
        M.evaluate(gt, gt, preprocessing="mindeye")
    assert M.evaluate(gt[:1], gt[:1], metrics="low-level", cache=False)["SSIM"] == pytest.approx(1.0)


def test_tables_write_csv_markdown_latex(tmp_path):
    pub = pd.DataFrame([[.356, .254, .942, .962, .872, .915, .775, .423]], index=["Brain-Diffuser"],
                       columns=["SSIM", "PixCorr", "AlexNet(2)", "AlexNet(5)", "InceptionV3", "CLIP",
                                "EfficientNet-B", "SwAV-ResNet50"])
    t = M.metrics_table(pub)
    assert t.loc["Brain-Diffuser"].tolist() == ["0.356", "0.254", "94.2%", "96.2%", "87.2%", "91.5%", "0.775", "0.423"]
    t.to_csv(tmp_path / "t.csv")
    assert pd.read_csv(tmp_path / "t.csv", index_col=0).loc["Brain-Diffuser", "EfficientNet-B ↓"] == 0.775
    md = table_markdown(t)
    assert md.splitlines()[0].startswith("|  | SSIM ↑ | PixCorr ↑ | AlexNet(2) ↑") and "| Brain-Diffuser | 0.356 |" in md
    tex = table_latex(M.metrics_table(pub, percent=False), caption="x_y", label="tab:a")
    assert r"SSIM $\uparrow$" in tex and "0.942" in tex and r"\caption{x\_y}" in tex and r"\label{tab:a}" in tex


def test_metrics_reexports_the_network_api():
    "The preprocessing variants and networks moved to neurodecode.metric_networks; neurodecode.metrics still answers for them."
    assert MN.__all__ and set(MN.__all__) <= set(M.__all__)
    assert all(getattr(M, n) is getattr(MN, n) for n in MN.__all__)
