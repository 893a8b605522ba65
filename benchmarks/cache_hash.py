"""Content-hash speed for the artifact cache: MB/s of blake2b, sha256 (hashlib) and, if installed, xxhash / blake3,
over artifacts written by `ArtifactCache` (npz latents, pkl stage-1 results, pt checkpoints) of realistic sizes.

Run: python benchmarks/cache_hash.py [--mb 400] [--cache DIR]   (DIR: an existing cache to hash instead)
Prints MB/s per hash and the projected cost of verifying a 0.7 GB cache (a second `make reproduce`, subject 1)."""
import argparse, hashlib, os, tempfile, time
from pathlib import Path

import numpy as np


def _hashers():
    out = {"sha256": hashlib.sha256, "blake2b": hashlib.blake2b, "blake2b-128": lambda: hashlib.blake2b(digest_size=16),
           "md5": hashlib.md5}
    try:
        import xxhash
        out["xxh3_128"] = xxhash.xxh3_128
        out["xxh64"] = xxhash.xxh64
    except ImportError:
        pass
    try:
        import blake3
        out["blake3"] = blake3.blake3
    except ImportError:
        pass
    return out


def write_artifacts(root: Path, mb: int):
    "Write ~`mb` MB of artifacts through ArtifactCache in the shapes stages store (latents npz, stage-1 pkl, ckpt pt)."
    import torch
    from neurodecode.core import ArtifactCache
    c, rng, n = ArtifactCache(root, verify="size"), np.random.default_rng(0), 0
    while n < mb * 2**20:
        i = n // 2**20
        c.save("latents", f"l{i}", {"train": rng.standard_normal((800, 24_000), dtype=np.float32),
                                    "test": rng.standard_normal((100, 24_000), dtype=np.float32)}, fmt="npz")
        c.save("stage1", f"s{i}", {"pred": rng.standard_normal((100, 24_000), dtype=np.float32), "test_mse": 1.0})
        c.save("tiny_vd", f"v{i}", {"w": torch.randn(4_000_000)}, fmt="pt")
        n = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=400)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.cache) if a.cache else Path(tmp)
        if not a.cache:
            write_artifacts(root, a.mb)
        files = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".json")]
        total = sum(p.stat().st_size for p in files)
        print(f"{len(files)} artifact files, {total / 2**20:.0f} MB (sizes {min(p.stat().st_size for p in files) / 2**20:.1f}"
              f"-{max(p.stat().st_size for p in files) / 2**20:.1f} MB); {os.cpu_count()} CPUs")
        t0 = time.perf_counter()
        for p in files:
            p.read_bytes()
        read_s = time.perf_counter() - t0
        print(f"read only (page cache): {total / 2**20 / read_s:8.0f} MB/s")
        res = {}
        for name, mk in _hashers().items():
            best = float("inf")
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                for p in files:
                    h = mk()
                    with open(p, "rb") as f:
                        while b := f.read(1 << 22):
                            h.update(b)
                    h.hexdigest()
                best = min(best, time.perf_counter() - t0)
            res[name] = total / 2**20 / best
            print(f"{name:12s} read+hash {res[name]:8.0f} MB/s   0.7 GB cache: {0.7 * 1024 / res[name]:5.2f} s")
        print("ratios to sha256: " + ", ".join(f"{k} {v / res['sha256']:.2f}x" for k, v in res.items()))


if __name__ == "__main__":
    main()
