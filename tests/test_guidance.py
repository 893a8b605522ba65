"Paper 2 guidance at scale: shards in separate processes write the same PNGs as one process; the SD loader round trip."
import multiprocessing as mp
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


def _setup():
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from neurodecode.guidance import clip_features
    from neurodecode.sd_sampler import SDModel, random_tiny_sd_modules
    torch.set_num_threads(1)
    unet, vae, sched, _ = random_tiny_sd_modules(0)
    sd = SDModel(unet, vae, sched, encode_text=lambda t: torch.zeros(len(t), 77, 32), device="cpu")
    torch.manual_seed(0)
    vis = CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=6, num_attention_heads=4)).eval().requires_grad_(False)
    phi = clip_features(vis, size=32)
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(5, 4, 8, 8, generator=g), torch.randn(5, 77, 32, generator=g)
    with torch.no_grad():
        tg = [f.numpy() for f in phi(torch.rand(5, 3, 16, 16, generator=g))]
    return sd, phi, z, c, tg


def _run(out_dir, shard):
    from neurodecode.guidance import generate
    sd, phi, z, c, tg = _setup()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [str(p) for p in generate(sd, z, c, out_dir, targets=tg, features=phi, kappa=1e3, eta=0.5, n_repeats=2,
                                         steps=8, chunk=2, shard=shard, quiet=True)]


def test_shards_in_processes_match_one_process(tmp_path):
    from neurodecode.guidance import read_generated
    one = _run(tmp_path / "one", (0, 1))
    assert len(one) == 10
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        parts = pool.starmap(_run, [(tmp_path / "two", (0, 2)), (tmp_path / "two", (1, 2))])
    assert sorted(p.split("/")[-1] for ps in parts for p in ps) == sorted(p.split("/")[-1] for p in one)
    names = [f"{i:05d}" for i in range(5)]
    np.testing.assert_array_equal(read_generated(tmp_path / "one", names, 2), read_generated(tmp_path / "two", names, 2))
    assert not list((tmp_path / "two").glob(".*.tmp*"))  # no temp files left


def test_loader_round_trip_and_errors(tmp_path):
    from neurodecode.core import NotFoundError
    from neurodecode.sd_sampler import load_sd, sd_img2img, write_tiny_sd
    root = write_tiny_sd(tmp_path / "stable-diffusion-v1-4")
    sd = load_sd(root, device="cpu")
    assert (sd.latent_channels, sd.latent_size, sd.image_size) == (4, 8, 16)
    c = sd.encode_prompt(["a red ball"])
    ims = sd_img2img(sd, torch.zeros(1, 4, 8, 8), c, steps=6, n_repeats=2, quiet=True)
    assert ims.shape == (1, 2, 16, 16, 3) and ims.dtype == np.uint8
    (root / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(NotFoundError, match="scheduler/scheduler_config.json"):
        load_sd(root)
