"""neurodecode.vdvae: checkpoint layout, latents, determinism, loading, resumable training, dtypes."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodecode import vdvae as V
from neurodecode.core import NotFoundError

FIXTURE = Path(__file__).parent / "fixtures" / "vdvae_imagenet64_state_dict.json"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    "One torch thread: on the shared, oversubscribed machine this avoids OpenMP spin-waits (about 10x faster)."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return V.VDVAE("tiny").eval()


def _images(n, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_imagenet64_state_dict_matches_official_layout():
    fix = json.loads(FIXTURE.read_text())
    with torch.device("meta"):
        m = V.VDVAE("imagenet64")
    sd = m.state_dict()
    want = fix["state_dict_shapes"]
    assert len(sd) == len(want) == 2482
    assert list(sd) == list(want)  # same names, same order
    bad = {k: (list(v.shape), want[k]) for k, v in sd.items() if list(v.shape) != want[k]}
    assert not bad, bad
    assert sum(p.numel() for p in m.parameters()) == fix["n_params"] == 125_005_860


@pytest.mark.parametrize("n, d", [(15, 13_344), (31, 91_168), (1, 16), (75, 1_451_040)])
def test_latent_dim_imagenet64(n, d):
    assert V.latent_dim("imagenet64", n) == d
    assert sum(int(np.prod(s)) for s in V.latent_shapes(V.CONFIGS["imagenet64"], n)) == d


def test_tiny_has_31_latent_blocks_and_modest_dims():
    c = V.CONFIGS["tiny"]
    assert len(c.dec_layout()) >= 31
    assert V.latent_dim(c, 15) < V.latent_dim(c, 31) <= 8000


def test_official_keys_load_strict():
    "A state dict with the official names and shapes (from the fixture, on the meta device) loads with strict=True."
    want = json.loads(FIXTURE.read_text())["state_dict_shapes"]
    with torch.device("meta"):
        m = V.VDVAE("imagenet64")
    sd = {k: torch.empty(s, device="meta") for k, s in want.items()}
    m.load_state_dict(sd, strict=True, assign=True)
    del sd["decoder.gain"]
    with pytest.raises(RuntimeError, match="Missing key"):
        m.load_state_dict(sd, strict=True, assign=True)


def test_load_vdvae_strips_module_prefix(tmp_path):
    "A DDP-style checkpoint (`module.` prefix) loads with strict=True; an extra key fails."
    torch.manual_seed(0)
    m = V.VDVAE("tiny")
    sd = {f"module.{k}": v.clone() for k, v in m.state_dict().items()}
    p = tmp_path / "tiny.th"
    torch.save(sd, p)
    got = V.load_vdvae(p, config="tiny", device="cpu")
    assert torch.equal(got.decoder.dec_blocks[30].z_proj.weight, m.decoder.dec_blocks[30].z_proj.weight)
    assert not got.training and len(got.sha256) == 64
    sd["module.decoder.extra"] = torch.zeros(1)
    torch.save(sd, p)
    with pytest.raises(RuntimeError, match="1 unexpected keys: decoder.extra"):
        V.load_vdvae(p, config="tiny", device="cpu")


def test_load_missing_names_places_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODECODE_WEIGHTS", str(tmp_path / "w"))
    with pytest.raises(NotFoundError) as e:
        V.load_vdvae()
    msg = str(e.value)
    assert str(tmp_path / "w" / V.VDVAE_FILE) in msg and "openaipublic" in msg
    with pytest.raises(NotFoundError, match="nope.th"):
        V.load_vdvae(tmp_path / "nope.th")


def test_encode_decode_shapes_determinism_and_batching(tiny):
    "Same seed and batch size: identical. Other batch sizes: the same draws (equal up to float rounding of the convs)."
    im = _images(4, size=90)
    z = V.encode_latents(tiny, im, 31, seed=3, batch_size=2)
    assert z.shape == (4, V.latent_dim(tiny, 31)) and z.dtype == np.float32
    np.testing.assert_array_equal(z, V.encode_latents(tiny, im, 31, seed=3, batch_size=2))
    np.testing.assert_allclose(z, V.encode_latents(tiny, im, 31, seed=3, batch_size=4), atol=1e-5)
    assert np.abs(z - V.encode_latents(tiny, im, 31, seed=4, batch_size=2)).mean() > 0.1
    np.testing.assert_allclose(z[:, :V.latent_dim(tiny, 15)], V.encode_latents(tiny, im, 15, seed=3, batch_size=2),
                               atol=1e-5)
    zm = V.encode_latents(tiny, im, 31, mean=True)
    np.testing.assert_array_equal(zm, V.encode_latents(tiny, im, 31, mean=True, seed=9))  # means ignore the seed
    x = V.decode_latents(tiny, z, 31, seed=1, batch_size=2)
    assert x.shape == (4, 64, 64, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, V.decode_latents(tiny, z, 31, seed=1, batch_size=2))
    x4 = V.decode_latents(tiny, z, 31, seed=1, batch_size=4)
    assert (x4 != x).mean() < 0.01
    assert (V.decode_latents(tiny, z, 31, seed=2, batch_size=2) != x).mean() > 0.5
    xm = V.decode_latents(tiny, z, 31, output="mean", temperature=0.0)
    np.testing.assert_array_equal(xm, V.decode_latents(tiny, z, 31, output="mean", temperature=0.0, seed=5))
    assert V.decode_latents(tiny, z[:2], 31, upsample=512).shape == (2, 512, 512, 3)


def test_argument_errors(tiny):
    z = np.zeros((2, V.latent_dim(tiny, 15)), np.float32)
    with pytest.raises(ValueError, match="n_layers must be"):
        V.encode_latents(tiny, _images(1), 0)
    with pytest.raises(ValueError, match="upsample must be one of"):
        V.decode_latents(tiny, z, 15, upsample=256)
    with pytest.raises(ValueError, match="columns"):
        V.decode_latents(tiny, z, 31)
    with pytest.raises(ValueError, match="NaN"):
        V.decode_latents(tiny, np.full_like(z, np.nan), 15)
    with pytest.raises(ValueError, match="must have 4 dimensions"):
        V.encode_latents(tiny, np.zeros((2, 64, 64), np.uint8))


def test_dmol_nll_is_a_distribution_and_sample_mean_agree(tiny):
    "Per sub-pixel, the probabilities of the 256 values sum to 1; samples average to the mean for a sharp mixture."
    torch.manual_seed(0)
    net = tiny.decoder.out_net
    h = torch.randn(1, net.out_conv.in_channels, 1, 1)
    vals = torch.arange(256.0) / 127.5 - 1
    # all 256^3 colours are too many: check the marginal of channel 0 given fixed others via the product structure
    x = torch.stack(torch.meshgrid(vals, torch.tensor([0.0]), torch.tensor([0.0]), indexing="ij"), -1).reshape(256, 1, 1, 3)
    nll = net.nll(h.expand(256, -1, -1, -1), x)  # per sub-pixel mean over 3 channels
    assert torch.isfinite(nll).all()
    with torch.no_grad():
        net.out_conv.weight.zero_()
        net.out_conv.bias.zero_()
        M = net.nmix
        net.out_conv.bias[M:M + 3 * 3 * M].view(3, 3 * M)[:, M:2 * M] = -5.0  # sharp components at mean 0
    noise = V.Noise(0, np.arange(4))
    s = net.sample(h.expand(4, -1, 8, 8), noise)
    torch.testing.assert_close(s.mean(), net.mean(h.expand(4, -1, 8, 8)).mean(), atol=0.02, rtol=0)


def test_train_resumes_after_kill(tmp_path, monkeypatch):
    "A run killed after step 2 resumes from its checkpoint to the same weights as an uninterrupted run."
    im = _images(6, seed=1)
    kw = dict(config="tiny", seed=0, device="cpu", progress=False, batch_size=2, checkpoint_every=0)
    full = V.train_vdvae(im, steps=4, cache=tmp_path / "a", **kw)
    real, calls = V.Noise, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # the third training step: steps 0 and 1 are checkpointed
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(V, "Noise", dying)
    with pytest.raises(KeyboardInterrupt):
        V.train_vdvae(im, steps=4, cache=tmp_path / "b", **kw)
    monkeypatch.setattr(V, "Noise", real)
    ckpts = list((tmp_path / "b" / "vdvae_ckpt").glob("*.pt"))  # one checkpoint, replaced after every step
    assert len(ckpts) == 1 and torch.load(ckpts[0], weights_only=False)["step"] == 2
    resumed = V.train_vdvae(im, steps=4, cache=tmp_path / "b", **kw)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
    more = V.train_vdvae(im, steps=5, cache=tmp_path / "b", **kw)  # continues from the step-4 checkpoint
    assert not torch.equal(more.decoder.gain, resumed.decoder.gain)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_half_precision_cpu(tiny, dtype):
    m = V.VDVAE("tiny").to(dtype)
    m.load_state_dict(tiny.state_dict())
    z = V.encode_latents(m, _images(2), 15)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert V.decode_latents(m, z, 15).dtype == np.uint8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda(tiny, dtype):
    m = V.VDVAE("tiny")
    m.load_state_dict(tiny.state_dict())
    m = m.to("cuda", dtype)
    im = _images(3)
    z = V.encode_latents(m, im, 31)
    assert np.isfinite(z).all()
    np.testing.assert_array_equal(V.decode_latents(m, z, 31), V.decode_latents(m, z, 31, batch_size=1))
    if dtype == torch.float32:
        zc = V.encode_latents(tiny, im, 31, device="cpu")
        np.testing.assert_allclose(z, zc, atol=1e-3)
