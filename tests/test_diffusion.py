"""neurodecode.diffusion with tiny random models: loading VD's diffusers layout, the img2img contract, resumable
batches and resumable training."""
import numpy as np
import pytest
import torch
from PIL import Image

from neurodecode.diffusion import (NOISE_AMPLITUDES, ClipEncoder, OpenAIBPETokenizer, VersatileDiffusion, perturb_init,
                                   random_tiny_clip, random_tiny_vd, reconstruct_batch, tiny_clip_configs)
from neurodecode.tiny_diffusion import _train_loop
from neurodecode.core import ArtifactCache, NotFoundError


@pytest.fixture(scope="module")
def models():
    clip = random_tiny_clip(["a", "red", "ball"], seed=0, image_size=32, patch_size=8, vision_layers=1, text_layers=1)
    vd = random_tiny_vd(clip, seed=0, image_size=16, width=8)
    rng = np.random.default_rng(0)
    init = rng.integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    te = rng.normal(0, 0.3, (5, 77, clip.dim)).astype(np.float32)
    ve = rng.normal(0, 0.3, (5, clip.vision_tokens, clip.dim)).astype(np.float32)
    return clip, vd, init, te, ve


KW = dict(steps=6, guidance=2.0)


def test_contract(models):
    clip, vd, init, te, ve = models
    r = vd.reconstruct(init, te, ve, **KW)
    assert r.shape == (5, 16, 16, 3) and r.dtype == np.uint8
    assert np.array_equal(r, vd.reconstruct(init, te, ve, **KW))  # deterministic
    assert np.array_equal(r[[3, 1]], vd.reconstruct(init[[3, 1]], te[[3, 1]], ve[[3, 1]], indices=[3, 1], **KW))
    small = np.asarray([np.asarray(Image.fromarray(a).resize((16, 16), Image.BICUBIC)) for a in init])
    assert np.array_equal(vd.reconstruct(init, te, ve, strength=0, **KW), small)  # strength 0: the init image
    assert np.array_equal(vd.reconstruct(small, te, ve, strength=0, **KW), small)
    for w, other in ((1.0, "vision"), (0.0, "text")):  # one condition only
        te2, ve2 = (te, ve + 1) if other == "vision" else (te + 1, ve)
        assert np.array_equal(vd.reconstruct(init, te, ve, text_weight=w, **KW),
                              vd.reconstruct(init, te2, ve2, text_weight=w, **KW))
    with pytest.raises(ValueError, match="strength must be >= 0 and <= 1"):
        vd.reconstruct(init, te, ve, strength=1.5)
    with pytest.raises(ValueError, match="text_weight must be"):
        vd.reconstruct(init, te, ve, text_weight=-0.1)


def test_perturb_init():
    x = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    assert NOISE_AMPLITUDES == (0, 8, 16, 32, 64, 256)
    assert np.array_equal(perturb_init(x, 0, seed=5), x)
    for a in NOISE_AMPLITUDES[1:]:
        p = perturb_init(x, a, seed=5)
        assert p.dtype == np.uint8 and p.shape == x.shape and not np.array_equal(p, x)
    with pytest.raises(TypeError, match="dtype kind"):
        perturb_init(x.astype(float), 8)


def test_resumed_batch_equals_uninterrupted(models, tmp_path):
    clip, vd, init, te, ve = models
    full = reconstruct_batch(vd, init, te, ve, tmp_path / "full", batch_size=2, **KW)
    calls = {"n": 0}
    real = vd.reconstruct

    def dying(*a, **k):  # the job is killed after its first chunk
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    vd.reconstruct = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            reconstruct_batch(vd, init, te, ve, tmp_path / "res", batch_size=2, **KW)
    finally:
        del vd.reconstruct
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["00000.png", "00001.png"]  # no partial files
    res = reconstruct_batch(vd, init, te, ve, tmp_path / "res", batch_size=2, **KW)
    assert [p.read_bytes() for p in res] == [p.read_bytes() for p in full]
    shards = [reconstruct_batch(vd, init, te, ve, tmp_path / "sh", batch_size=2, shard=(i, 2), **KW) for i in range(2)]
    assert sorted(p.name for s in shards for p in s) == [p.name for p in full]
    assert all((tmp_path / "sh" / p.name).read_bytes() == p.read_bytes() for p in full)
    # a finished PNG damaged behind the cache's back (zeroed bytes): one warning naming it, remade identically
    from neurodecode.core import CacheWarning
    b = bytearray(res[1].read_bytes()); b[60:124] = bytes(64); res[1].write_bytes(bytes(b))
    with pytest.warns(CacheWarning, match=str(res[1])) as w:
        again = reconstruct_batch(vd, init, te, ve, tmp_path / "res", batch_size=2, **KW)
    assert len([x for x in w if x.category is CacheWarning]) == 1
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in full]
    with pytest.raises(ValueError, match="names must be 5 distinct"):
        reconstruct_batch(vd, init, te, ve, tmp_path / "x", names=["a"] * 5)


def test_resumed_training_equals_uninterrupted(tmp_path):
    def run(cache, die_at=None):
        torch.manual_seed(0)
        m = torch.nn.Linear(4, 1)
        opt = torch.optim.AdamW(m.parameters(), lr=0.1)
        X = torch.randn(64, 4)

        def loss_fn(step):
            if die_at is not None and step == die_at:
                raise KeyboardInterrupt
            i = torch.from_numpy(np.random.default_rng([0, step]).choice(64, 8, replace=False))
            return ((m(X[i]) - X[i].sum(1, keepdim=True)) ** 2).mean()

        _train_loop("t", "k", {"m": m}, opt, loss_fn, 10, 0.1, 2, cache, ckpt_every=3, quiet=True)
        return m.weight.detach().clone()

    ref = run(None)
    cache = ArtifactCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run(cache, die_at=7)
    assert cache.exists("checkpoints/t", "k")  # the step-6 checkpoint, sha256 in its manifest
    assert torch.equal(run(cache), ref)
    assert not list((tmp_path / "checkpoints" / "t").glob("k.*"))


def test_corrupt_training_checkpoint_restarts_with_one_warning(tmp_path):
    "Same-size garbage in a real checkpoint: one CacheWarning naming it, training from step 0, the same result."
    from neurodecode.core import CacheWarning

    def run(cache, die_at=None):
        torch.manual_seed(0)
        m = torch.nn.Linear(4, 1)
        opt = torch.optim.AdamW(m.parameters(), lr=0.1)
        X = torch.randn(64, 4)

        def loss_fn(step):
            if die_at is not None and step == die_at:
                raise KeyboardInterrupt
            return ((m(X[:8]) - X[:8].sum(1, keepdim=True)) ** 2).mean()
        _train_loop("t", "k", {"m": m}, opt, loss_fn, 10, 0.1, 2, cache, ckpt_every=3, quiet=True)
        return m.weight.detach().clone()

    ref = run(None)
    cache = ArtifactCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run(cache, die_at=7)
    f = cache.path("checkpoints/t", "k")
    f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))
    with pytest.warns(CacheWarning, match=str(f)) as w:
        got = run(cache)
    assert torch.equal(got, ref) and len([x for x in w if x.category is CacheWarning]) == 1


def test_from_pretrained_diffusers_layout(tmp_path):
    "VD's diffusers folder (image_unet, UNetFlatConditionModel text_unet, vae, scheduler, CLIP encoders) loads and runs."
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.pipelines.deprecated.versatile_diffusion.modeling_text_unet import UNetFlatConditionModel
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection
    root = tmp_path / "vd"
    with pytest.raises(NotFoundError, match="lacks image_unet/"):
        VersatileDiffusion.from_pretrained(root)
    torch.manual_seed(0)
    tc, vc = tiny_clip_configs(width=32, image_size=32, patch_size=8, vision_layers=1, text_layers=1,
                               vocab_size=49408, eos_token_id=49407)  # CLIP's BPE ids
    CLIPTextModelWithProjection(tc).save_pretrained(root / "text_encoder")
    CLIPVisionModelWithProjection(vc).save_pretrained(root / "image_encoder")
    cfg = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
               cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    UNet2DConditionModel(down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **cfg).save_pretrained(root / "image_unet")
    UNetFlatConditionModel(down_block_types=("CrossAttnDownBlockFlat", "DownBlockFlat"),
                           up_block_types=("UpBlockFlat", "CrossAttnUpBlockFlat"), **cfg).save_pretrained(root / "text_unet")
    AutoencoderKL(block_out_channels=(16, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=16).save_pretrained(root / "vae")
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").save_pretrained(root / "scheduler")
    vd = VersatileDiffusion.from_pretrained(root, device="cpu")
    assert vd.image_size == 16 and vd.uncond_text.shape == (77, 32) and vd.uncond_vision.shape == (17, 32)
    s = vd.scheduler.config
    assert (s.beta_start, s.beta_end, s.beta_schedule, s.clip_sample, s.set_alpha_to_one, s.steps_offset) == \
        (0.00085, 0.012, "scaled_linear", False, False, 1)
    vd.scheduler.set_timesteps(50)
    assert vd.scheduler.timesteps[0] == 981 and vd.scheduler.timesteps[-1] == 1
    x = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)
    te = np.stack([vd.uncond_text] * 2) + 0.1
    ve = np.stack([vd.uncond_vision] * 2)
    r = vd.reconstruct(x, te, ve, steps=4)
    assert r.shape == (2, 16, 16, 3)
    # the unconditional text input is CLIP's embedding of '' tokenised with EOS padding
    ids = OpenAIBPETokenizer()([""])
    assert ids[0, 0] == 49406 and (ids[0, 1:] == 49407).all()
    # issue 20: damaged files in the folder name themselves and where the real weights come from
    from neurodecode.checkpoints import CheckpointError
    sc = root / "scheduler" / "scheduler_config.json"
    sc.write_text(sc.read_text()[:40])  # truncated JSON
    with pytest.raises(CheckpointError, match="scheduler_config.json cannot be used") as e:
        VersatileDiffusion.from_pretrained(root, device="cpu")
    assert str(sc) in str(e.value) and "shi-labs/versatile-diffusion" in str(e.value)
    (f,) = (root / "vae").glob("*.safetensors")
    f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))
    with pytest.raises(CheckpointError, match="Versatile Diffusion VAE in") as e:
        VersatileDiffusion.from_pretrained(root, device="cpu")
    assert str(root / "vae") in str(e.value)
