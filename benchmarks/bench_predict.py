"""End-to-end patches/s with a real network, against the network alone on the same batches.

    python benchmarks/bench_predict.py [--model hspnet_r34] [--slide PATH] [--device auto]
                                       [--batch-size 4]

The network has random weights (speed does not depend on them). "end to end" is a whole
`predict_slide` run: tissue mask, reading, network, blending and writing; "model alone" is the
network (normalisation, forward, softmax) on the same number of patches, already in memory.
The default slide is the real CMU-1-Small-Region.svs (100 kept windows), small enough for a
CPU run; pass a larger --slide on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.inference.predictor import Normalisation, Predictor, resolve_device
from wsiseg.models import LoadedModel, create_model, default_card

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-out"
DEFAULT_SLIDE = ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="hspnet_r34")
    ap.add_argument("--slide", default=str(DEFAULT_SLIDE))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    OUT.mkdir(exist_ok=True)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    card = default_card(args.model)
    module = create_model(args.model).eval()
    loaded = LoadedModel(module=module, card=card, weights_sha256=None, source=args.model,
                         trained=False)

    with torch.inference_mode():  # warm-up, so one-off allocations stay out of both figures
        module.to(device)(torch.rand(args.batch_size, 3, card.patch_size, card.patch_size, device=device))

    out = OUT / "bench_predict.wsiseg.zarr"
    cfg = PredictConfig(out=str(out), overwrite=True, progress=False, device=args.device,
                        batch_size=args.batch_size)
    t = time.perf_counter()
    info = predict_slide(args.slide, cfg, model=loaded)
    e2e = time.perf_counter() - t
    n = info.patches_kept

    predictor = Predictor(module, card.num_classes, Normalisation(card.mean, card.std), device)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (args.batch_size, card.patch_size, card.patch_size, 3), dtype=np.uint8)
    predictor(batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    done = 0
    while done < n:
        probs = predictor(batch[: min(args.batch_size, n - done)])
        done += probs.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    alone = time.perf_counter() - t
    res = {
        "model": args.model, "slide": args.slide, "device": str(device),
        "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(), "patches": n,
        "end_to_end_s": e2e, "end_to_end_patches_per_s": n / e2e,
        "model_alone_s": alone, "model_alone_patches_per_s": n / alone,
        "timings": info.timings,
    }
    print(json.dumps(res, indent=2))
    (OUT / "bench_predict.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
