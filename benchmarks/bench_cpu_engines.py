"""CPU inference engines and precisions for a network, measured side by side.

    python benchmarks/bench_cpu_engines.py [--model hspnet-lite-glas] [--also hspnet_r34]
                                           [--threads N] [--batch 1] [--seconds 20]
                                           [--glas ../shared/data/glas]

For each engine: windows per second of the network alone (normalised 400 px windows in host
memory, ``--batch`` at a time, ``--threads`` threads: default the cores this process may use),
the share of labels (argmax) equal to torch's float32 on real windows, and the peak RSS of a
process that runs only that engine. The windows are GlaS images (colon H&E, 0.62 um/px)
resampled to the model's resolution and laid on near-white glass, 400 px a side, as the
pipeline's windows over a biopsy look: the test images for agreement, the training images to
calibrate int8.

Engines: torch eager in float32; torch with bf16 autocast (on a CPU without native bf16 it is
emulated, about 100 times slower, and left out unless ``--emulated-bf16``); ``torch.compile``; ONNX Runtime in
float32 and in int8 (static QDQ quantisation, per-channel weights, calibrated on the GlaS
training windows); OpenVINO in float32. An engine whose package is missing is told so. The
``--also`` model is built with random weights (no trained ones ship), so its agreement tells
the engines' arithmetic apart, not a diagnosis.

Figures go to bench-out/cpu_engines.json; a table closes the output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("torch-fp32", "torch-bf16", "torch-compile", "onnxruntime-fp32", "onnxruntime-int8",
           "openvino-fp32")
WINDOWS = 16  # for agreement, and for calibration


def glass_windows(folder: Path, mpp: float, patch: int, n: int, seed: int) -> np.ndarray:
    """``n`` uint8 (patch, patch, 3) windows: images of ``folder`` at ``mpp``, on glass."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = sorted(p for p in folder.glob("*.jpg"))
    picked = rng.choice(len(images), size=min(n, len(images)), replace=False)
    out = np.full((len(picked), patch, patch, 3), (236, 236, 240), dtype=np.uint8)
    for i, k in enumerate(picked):
        image = Image.open(images[k]).convert("RGB")
        scale = 0.62 / mpp
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.Resampling.LANCZOS)
        pixels = np.asarray(image)[:patch, :patch]
        y, x = (patch - pixels.shape[0]) // 2, (patch - pixels.shape[1]) // 2
        out[i, y : y + pixels.shape[0], x : x + pixels.shape[1]] = pixels
    return out


def normalised(windows: np.ndarray, card) -> np.ndarray:
    x = windows.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean = np.asarray(card.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(card.std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - mean) / std)


def load(name: str):
    import torch

    from wsiseg.models import create_model, default_card, load_model
    from wsiseg.models.loading import installed_cards

    if name in installed_cards():
        loaded = load_model(name)
        return loaded.module.eval(), loaded.card
    torch.manual_seed(0)
    return create_model(name).eval(), default_card(name)


def runner(engine: str, module, x_example: np.ndarray, threads: int, work: Path,
           calibration: np.ndarray | None):
    """A function of a float32 NCHW batch to its logits, for ``engine``."""
    import torch

    torch.set_num_threads(threads)
    if engine.startswith("torch"):
        network = torch.compile(module) if engine == "torch-compile" else module
        bf16 = engine == "torch-bf16"

        def run(x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                out = network(t)
            out = out[0] if isinstance(out, (tuple, list)) else out
            return out.float().numpy()

        return run
    onnx = work / "model.onnx"
    if not onnx.exists():
        torch.onnx.export(module, (torch.from_numpy(x_example),), str(onnx), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"},
                                        "logits": {0: "n", 2: "h", 3: "w"}})
    if engine.startswith("openvino"):
        import openvino as ov

        compiled = ov.Core().compile_model(str(onnx), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: compiled(x)[0]
    import onnxruntime as ort

    model = onnx
    if engine == "onnxruntime-int8":
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Windows(CalibrationDataReader):
            def __init__(self) -> None:
                self.left = [calibration[i : i + 1] for i in range(len(calibration))]

            def get_next(self):
                return {"x": self.left.pop()} if self.left else None

        prepared, model = work / "model.pre.onnx", work / "model.int8.onnx"
        quant_pre_process(str(onnx), str(prepared))
        quantize_static(str(prepared), str(model), Windows(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def worker(args: argparse.Namespace) -> None:
    """One engine in this process: its rate, labels (to a file) and peak RSS, as JSON."""
    module, _ = load(args.model)
    work = Path(args.work)
    test = np.load(work / "test.npy")
    calibration = np.load(work / "calibration.npy")
    started = time.perf_counter()
    run = runner(args.engine, module, test[:1], args.threads, work, calibration)
    run(test[: args.batch])  # warm-up (compiles what compiles)
    prepared = time.perf_counter() - started
    labels = np.concatenate([run(test[i : i + args.batch]).argmax(1).astype(np.uint8)
                             for i in range(0, len(test), args.batch)])
    np.save(work / f"labels-{args.engine}.npy", labels)
    emulated = args.engine == "torch-bf16" and not _native_bf16()
    seconds = 0.0 if emulated else args.seconds
    batch = test[: args.batch]
    done, t = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - t < seconds:
        run(batch)
        done += len(batch)
    rate = done / (time.perf_counter() - t)
    print(json.dumps({"rate": rate, "prepare_s": prepared, "emulated": emulated,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _native_bf16() -> bool:
    from wsiseg.inference.predictor import native_cpu_bf16

    return native_cpu_bf16()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="hspnet-lite-glas")
    ap.add_argument("--also", action="append", default=None,
                    help="another model (registry name, random weights); default hspnet_r34")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0, help="timed per engine")
    ap.add_argument("--glas", type=Path, default=ROOT.parent / "shared" / "data" / "glas")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--emulated-bf16", action="store_true",
                    help="run torch-bf16 where the CPU only emulates bf16 (hours, not minutes)")
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:
        worker(args)
        return
    rows = []
    for model in [args.model, *(args.also if args.also is not None else ["hspnet_r34"])]:
        _, card = load(model)
        with tempfile.TemporaryDirectory(prefix="wsiseg-engines-") as tmp:
            work = Path(tmp)
            test = np.concatenate([glass_windows(args.glas / s, card.mpp, card.patch_size,
                                                 WINDOWS // 2, 1) for s in ("testA", "testB")])
            np.save(work / "test.npy", normalised(test, card))
            np.save(work / "calibration.npy", normalised(glass_windows(
                args.glas / "train", card.mpp, card.patch_size, WINDOWS, 2), card))
            for engine in args.engines.split(","):
                row = {"model": model, "engine": engine, "threads": args.threads,
                       "batch": args.batch}
                if engine == "torch-bf16" and not (_native_bf16() or args.emulated_bf16):
                    row["error"] = "left out: no native bf16 on this CPU (--emulated-bf16)"
                    rows.append(row)
                    continue
                run = subprocess.run(
                    [sys.executable, __file__, "--engine", engine, "--work", str(work),
                     "--model", model, "--threads", str(args.threads), "--batch",
                     str(args.batch), "--seconds", str(args.seconds)],
                    capture_output=True, text=True, check=False)
                if run.returncode != 0:
                    missing = "No module named" in run.stderr
                    row["error"] = ("not installed" if missing
                                    else run.stderr.strip().splitlines()[-1][:160])
                else:
                    row.update(json.loads(run.stdout.strip().splitlines()[-1]))
                    labels = np.load(work / f"labels-{engine}.npy")
                    reference = np.load(work / "labels-torch-fp32.npy")
                    row["labels_agree"] = float((labels == reference).mean())
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    (out / "cpu_engines.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))


def table(rows: list[dict]) -> str:
    lines = [(f"{'model':<18} {'engine':<18} {'windows/s':>9} {'x fp32':>6} {'labels':>8} "
              f"{'peak RSS':>9}")]
    base = {r["model"]: r["rate"] for r in rows if r["engine"] == "torch-fp32" and "rate" in r}
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<18} {r['engine']:<18} {r['error']}")
            continue
        speed = r["rate"] / base[r["model"]] if r["model"] in base else float("nan")
        note = "  (emulated: no native bf16)" if r.get("emulated") else ""
        lines.append(f"{r['model']:<18} {r['engine']:<18} {r['rate']:>9.2f} {speed:>6.2f} "
                     f"{100 * r['labels_agree']:>7.2f}% {r['peak_rss_mb']:>6.0f} MB{note}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
