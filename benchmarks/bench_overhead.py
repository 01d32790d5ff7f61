"""The pipeline's own cost per window: wsiseg against MONAI's sliding window, with a free model.

    python benchmarks/bench_overhead.py [--width 20000 --height 15000] [--batch-size 4]
                                        [--reader openslide|tifffile|auto]

The model is the 1x1-convolution colour model of examples/colour_model.py, so what is timed is
the pipeline around the network: reading, normalising, softmax, Gaussian blending, argmax and
writing. Each side runs as a whole process of its own, one after the other, on the same synthetic
x40 slide (written once under bench-out/):

  wsiseg  ``predict_slide`` at x10 (1.0 um/px), 400 px windows at stride 100, the windows with
          at least 20% tissue, batch --batch-size; windows/s = windows predicted / whole run.
  MONAI   (needs ``pip install monai``; it is not a dependency of wsiseg) the same x10 image
          read once with OpenSlide, then ``monai.inferers.sliding_window_inference`` (roi 400,
          overlap 0.75, Gaussian, sigma_scale 1/8, sw_batch_size --batch-size) over every
          window of the image, softmax inside the predictor as wsiseg does, argmax, and a zarr
          write of the map; windows/s = windows MONAI ran / (read + infer + write).
  MONAI-cl  the same, with the predictor handing the network channels_last input and taking
          the softmax of contiguous logits, as wsiseg's predictor does: MONAI at its best.

Both sides use the same torch thread count. Results go to bench-out/bench_overhead.json too.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_read import OUT, colour_model, machine, synthetic_slide


def run_wsiseg(slide: str, model: str, batch_size: int, reader: str) -> dict:
    from wsiseg.inference.pipeline import PredictConfig, predict_slide
    from wsiseg.models import load_model

    loaded = load_model(model, trust_code=True)
    t = time.perf_counter()
    info = predict_slide(slide, PredictConfig(out=str(OUT / "overhead.wsiseg.zarr"), overwrite=True,
                                              progress=False, batch_size=batch_size,
                                              reader=reader),
                         model=loaded)
    seconds = time.perf_counter() - t
    timings = info.timings
    n = info.patches_predicted
    return {"windows": n, "seconds": seconds, "windows_per_s": n / seconds, "timings": timings,
            "ms_per_window": {k: 1000 * v / n for k, v in timings.items() if k != "tissue"}}


def run_monai(slide: str, model: str, batch_size: int, channels_last: bool = False) -> dict:
    import numpy as np
    import openslide
    import torch
    import zarr
    from monai.inferers import sliding_window_inference

    module = torch.jit.load(model).eval()

    def predictor(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            return torch.softmax(module(x / 255.0).contiguous(), dim=1)
        return torch.softmax(module(x / 255.0), dim=1)

    t = time.perf_counter()
    with openslide.OpenSlide(slide) as osr:
        mpp = float(osr.properties[openslide.PROPERTY_NAME_MPP_X])
        level = osr.get_best_level_for_downsample(1.0 / mpp + 1e-6)
        if abs(osr.level_downsamples[level] * mpp - 1.0) > 0.02:
            raise SystemExit(f"{slide} has no x10 level; write the slide with a downsample of "
                             f"{1.0 / mpp:g}")
        w, h = osr.level_dimensions[level]
        image = np.asarray(osr.read_region((0, 0), level, (w, h)).convert("RGB"))
    read_s = time.perf_counter() - t
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    t = time.perf_counter()
    with torch.inference_mode():
        probs = sliding_window_inference(x, 400, batch_size, predictor, overlap=0.75,
                                         mode="gaussian", sigma_scale=0.125)
        labels = probs[0].argmax(0).to(torch.uint8).numpy()
    infer_s = time.perf_counter() - t
    t = time.perf_counter()
    out = zarr.open_group(str(OUT / "overhead.monai.zarr"), mode="w", zarr_format=3)
    out.create_array("labels", data=labels, chunks=(512, 512))
    write_s = time.perf_counter() - t
    # MONAI's windows: a scan interval of 100 px, the last window flush with the far edge.
    n = math.prod(math.ceil((size - 400) / 100) + 1 for size in (h, w))
    seconds = read_s + infer_s + write_s
    return {"windows": n, "seconds": seconds, "windows_per_s": n / seconds,
            "timings": {"read": read_s, "infer": infer_s, "write": write_s}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=20000)
    ap.add_argument("--height", type=int, default=15000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--reader", default="openslide", help="wsiseg's pixel decoder")
    ap.add_argument("--one", nargs=3, metavar=("SIDE", "SLIDE", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        side, slide, model = args.one
        if side == "wsiseg":
            print(json.dumps(run_wsiseg(slide, model, args.batch_size, args.reader)))
        else:
            print(json.dumps(run_monai(slide, model, args.batch_size, side == "monai-cl")))
        return
    model = colour_model()
    slide = str(synthetic_slide(args.width, args.height))
    results = {"machine": machine(), "slide": slide, "batch_size": args.batch_size,
               "reader": args.reader}
    for side in ("wsiseg", "monai", "monai-cl"):
        run = subprocess.run([sys.executable, __file__, "--one", side, slide, model,
                              "--batch-size", str(args.batch_size), "--reader", args.reader],
                             capture_output=True, text=True, check=False)
        if run.returncode:
            print(f"{side}: failed\n{run.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        results[side] = r
        print(f"{side:8s} {r['windows']:6d} windows in {r['seconds']:6.1f} s: "
              f"{r['windows_per_s']:6.1f} windows/s  "
              + "  ".join(f"{k} {v:.1f}" for k, v in r["timings"].items()))
    for other in ("monai", "monai-cl"):
        if "wsiseg" in results and other in results:
            ratio = results["wsiseg"]["windows_per_s"] / results[other]["windows_per_s"]
            results[f"ratio_{other}"] = ratio
            print(f"wsiseg / {other} windows/s: {ratio:.2f}")
    (OUT / "bench_overhead.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
