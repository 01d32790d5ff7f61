"""The device check: is the map on an accelerator the CPU's map, and what does the pipeline cost?

    python benchmarks/gpu_check.py [--device cuda] [--batch-sizes 32,64,128]
                                   [--width 40000 --height 30000] [--quick] [--compile]
                                   [--reader openslide|tifffile|auto] [--out DIR]
                                   [--real SLIDE ...] [--budget SECONDS]

Run it through benchmarks/gpu_check.sh on a machine that has torch but not the rest of wsiseg's
dependencies (benchmarks/fetch_wheels.sh brings those as wheels). Slides are synthetic x40 SVS
written here with deflate tiles, which need no imagecodecs.

1. Correctness, with the installed model on a small slide: the CPU map in float32 is the
   reference. The device's map in its default precision (bf16 autocast on CUDA) must agree on
   at least 99.5% of the labels; in float32 its stored probabilities must lie within 2/255.
2. Cost, with HSP-Net-R34 (random weights) and the installed model on a slide of --width x
   --height, at each batch size: the network alone (normalise, forward, softmax on patches
   already in host memory) against the whole ``predict_slide`` run (tissue, reading,
   network, blending, writing), in windows per second, E = end to end / network alone, and
   the peak of the device memory torch allocated.
3. Each ``--real`` slide (a scanner's file, such as ``CMU-1-Small-Region.svs``) is checked as
   in 1. with the installed model, and costed at the largest batch size.

The large slide is written by a process of its own while the correctness runs. With
``--budget``, cost runs that would start after that many seconds are left out (and said to
be), so that the table still comes within a lease. A table closes the output; the figures also go to OUT/gpu_check.json, rewritten after each step. ``--quick`` shrinks the
slides and batch sizes, and lays the windows side by side (stride = patch size, one window
where the model's stride gives a dozen), so that ``--device cpu --quick`` runs in well under
a minute: it proves that every step runs and reports, not what the figures are.
Exit code 1 when a correctness check fails.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.inference.predictor import Normalisation, Predictor, resolve_device
from wsiseg.models import LoadedModel, create_model, default_card, load_model
from wsiseg.models.loading import default_model_name
from wsiseg.result.store import result_array
from wsiseg.testing import write_large_svs

AGREEMENT = 0.995  # labels, device default precision against CPU float32
PROB_TOLERANCE = 2  # in 1/255, device float32 against CPU float32


def slide(folder: Path, width: int, height: int, tissue_fraction: float) -> Path:
    path = folder / f"check-{width}x{height}.svs"
    if not path.exists():
        t = time.perf_counter()
        write_large_svs(path, width, height, mpp=0.25, tissue_fraction=tissue_fraction,
                        compression="deflate")
        print(f"wrote {path.name} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def models(quick: bool) -> dict[str, LoadedModel]:
    torch.manual_seed(0)
    card = default_card("hspnet_r34")
    r34 = LoadedModel(module=create_model("hspnet_r34").eval(), card=card, weights_sha256=None,
                      source="hspnet_r34", trained=False)
    installed = default_model_name()
    found = {"hspnet_r34": r34}
    if installed is not None:
        found[installed] = load_model(installed)
    return found


def run(path: Path, out: Path, model: LoadedModel, device: str, **settings) -> tuple[dict, float]:
    config = PredictConfig(out=str(out), overwrite=True, progress=False, device=device, **settings)
    t = time.perf_counter()
    info = predict_slide(path, config, model=model)
    return info.to_attrs(), time.perf_counter() - t


def correctness(path: Path, folder: Path, model: LoadedModel, device: str, **settings) -> dict:
    """Labels and probabilities on ``device`` against the CPU's float32 map; ``settings`` go
    to all three runs."""
    reference, _ = run(path, folder / "cpu.zarr", model, "cpu", amp="fp32", probabilities=True,
                       **settings)
    run(path, folder / "default.zarr", model, device, **settings)
    run(path, folder / "fp32.zarr", model, device, amp="fp32", probabilities=True, **settings)
    cpu = zarr.open_group(str(folder / "cpu.zarr"), mode="r")
    default = zarr.open_group(str(folder / "default.zarr"), mode="r")
    fp32 = zarr.open_group(str(folder / "fp32.zarr"), mode="r")
    labels = result_array(cpu, "labels")[...]
    agreement = float((result_array(default, "labels")[...] == labels).mean())
    diff = np.abs(result_array(fp32, "probabilities")[...].astype(np.int16)
                  - result_array(cpu, "probabilities")[...].astype(np.int16))
    return {"windows": reference["patches_predicted"], "labels_agree": agreement,
            "labels_agree_fp32": float((result_array(fp32, "labels")[...] == labels).mean()),
            "max_prob_diff_255": int(diff.max())}


def network_alone(model: LoadedModel, device: torch.device, batch_size: int, n: int,
                  compile: bool) -> float:
    """Windows per second of normalise + forward + softmax on host patches, as the pipeline
    calls it."""
    card = model.card
    predictor = Predictor(model.module, card.num_classes,
                          Normalisation(tuple(card.mean), tuple(card.std), card.channel_order),
                          device, compile=compile)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (batch_size, card.patch_size, card.patch_size, 3), dtype=np.uint8)
    # Warm-up on the largest batch timed: allocations and kernel choices stay out of the figure.
    predictor(batch[: max(n, 1)])
    _sync(device)
    t = time.perf_counter()
    done = 0
    while done < n:
        done += predictor(batch[: min(batch_size, n - done)]).shape[0]
    _sync(device)
    return n / (time.perf_counter() - t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-sizes", default=None, help="default 32,64,128 (--quick: 4)")
    ap.add_argument("--width", type=int, default=None, help="default 40000 (--quick: 1600)")
    ap.add_argument("--height", type=int, default=None, help="default 30000 (--quick: 1200)")
    ap.add_argument("--quick", action="store_true",
                    help="small slides, one batch size, windows side by side")
    ap.add_argument("--out", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--compile", action="store_true", help="torch.compile the networks")
    ap.add_argument("--reader", default="auto", help="pixel decoder for the cost runs")
    ap.add_argument("--real", type=Path, action="append", default=[],
                    help="a real slide to check and cost as well (repeatable)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds after which no further cost run is started")
    args = ap.parse_args()
    quick = args.quick
    batch_sizes = [int(b) for b in (args.batch_sizes or ("4" if quick else "32,64,128")).split(",")]
    width = args.width or (1600 if quick else 40000)
    height = args.height or (1200 if quick else 30000)
    device = resolve_device(args.device)
    started = time.perf_counter()
    over_budget = lambda: args.budget is not None and time.perf_counter() - started > args.budget
    with tempfile.TemporaryDirectory(prefix="wsiseg-gpu-check-") as tmp, \
            concurrent.futures.ProcessPoolExecutor(1) as writer:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        big_written = writer.submit(slide, folder, width, height, 0.4)
        print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})"
                                    if device.type == "cuda" else "")
              + f", torch {torch.__version__}", flush=True)
        loaded = models(quick)
        installed_name = next((name for name in loaded if name != "hspnet_r34"), None)
        installed = None if installed_name is None else loaded[installed_name]
        results: dict = {"device": str(device), "torch": torch.__version__,
                         "compile": args.compile, "reader": args.reader,
                         "slide": f"{width} x {height} x40", "cost": [], "real": [],
                         "left_out": []}

        def save() -> None:
            results["seconds"] = time.perf_counter() - started
            (folder / "gpu_check.json").write_text(json.dumps(results, indent=2))

        # --quick: stride = patch size, so that the CPU's runs predict few windows.
        side_by_side = lambda model: {"stride": model.card.patch_size} if quick else {}

        def cost(path: Path, name: str, model: LoadedModel, batch_size: int) -> dict | None:
            if over_budget():
                results["left_out"].append(f"{name} at batch {batch_size} on {path.name}")
                return None
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            attrs, seconds = run(path, folder / "cost.zarr", model, str(device),
                                 batch_size=batch_size, compile=args.compile,
                                 reader=args.reader, **side_by_side(model))
            n = attrs["patches_predicted"]
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
            alone = network_alone(model, device, batch_size, n, args.compile) if n else 0.0
            row = {"model": name, "batch_size": batch_size, "windows": n, "slide": path.name,
                   "end_to_end_per_s": n / seconds, "network_per_s": alone,
                   "E": n / seconds / alone if alone else 0.0, "gpu_peak_bytes": peak,
                   "timings": attrs["timings"]}
            print(json.dumps(row), flush=True)
            return row

        if installed is not None:
            small = slide(folder, 1200 if quick else 4000, 900 if quick else 3000, 0.7)
            results["correctness"] = correctness(small, folder, installed, str(device),
                                                 **side_by_side(installed))
            print("correctness", results["correctness"], flush=True)
            save()
            for real in args.real:
                checked = correctness(real, folder, installed, str(device))
                checked["slide"] = real.name
                row = cost(real, installed_name or "", installed, max(batch_sizes))
                checked["cost"] = row
                results["real"].append(checked)
                print("real", json.dumps(checked), flush=True)
                save()
        big = big_written.result()
        for name, model in loaded.items():
            for batch_size in batch_sizes:
                row = cost(big, name, model, batch_size)
                if row is not None:
                    results["cost"].append(row)
                    save()
        save()
    print(table(results))
    sys.exit(0 if passed(results) else 1)


def passed(results: dict) -> bool:
    checks = [c for c in [results.get("correctness"), *results.get("real", [])] if c]
    return all(c["windows"] > 0 and c["labels_agree"] >= AGREEMENT
               and c["max_prob_diff_255"] <= PROB_TOLERANCE for c in checks)


def table(results: dict) -> str:
    lines = [(f"== wsiseg device check: {results['device']}, torch {results['torch']}, "
              f"{results['seconds']:.0f} s ==")]
    c = results.get("correctness")
    if c is None:
        lines.append("correctness: no installed model, not checked")
    else:
        lines += _agreement(c, "")
    for real in results.get("real", []):
        lines += _agreement(real, f" on {real['slide']}")
    lines.append(f"cost on a {results['slide']} slide (windows/s; reader {results['reader']}"
                 + (", compiled" if results["compile"] else "") + "):")
    lines.append(f"  {'model':<18} {'batch':>5} {'windows':>8} {'network':>9} {'end to end':>10} "
                 f"{'E':>5} {'GPU peak':>9}")
    rows = results["cost"] + [r["cost"] for r in results.get("real", []) if r.get("cost")]
    for r in rows:
        where = "" if r is not None and r in results["cost"] else f"  ({r['slide']})"
        lines.append(f"  {r['model']:<18} {r['batch_size']:>5} {r['windows']:>8} "
                     f"{r['network_per_s']:>9.1f} {r['end_to_end_per_s']:>10.1f} {r['E']:>5.2f} "
                     f"{r['gpu_peak_bytes'] / 2**30:>7.2f} G{where}")
    for left in results.get("left_out", []):
        lines.append(f"  left out (over --budget): {left}")
    return "\n".join(lines)


def _agreement(c: dict, where: str) -> list[str]:
    ok = lambda good: "ok" if good else "FAILED"
    return [
        f"correctness{where} ({c['windows']} windows, against the CPU in float32)"
        + ("" if c["windows"] else ": FAILED, the slide gave no window to compare") + ":",
        (f"  labels agree, default precision  {100 * c['labels_agree']:7.3f} %   >= "
         f"{100 * AGREEMENT:.1f} %  {ok(c['labels_agree'] >= AGREEMENT)}"),
        f"  labels agree, float32            {100 * c['labels_agree_fp32']:7.3f} %",
        (f"  probabilities, float32, max diff {c['max_prob_diff_255']:7d} /255 <= "
         f"{PROB_TOLERANCE}/255    {ok(c['max_prob_diff_255'] <= PROB_TOLERANCE)}"),
    ]


if __name__ == "__main__":
    main()
