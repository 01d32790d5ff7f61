"""Turning batches of uint8 patches into class probabilities on a device."""

from __future__ import annotations

import atexit
import collections
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import torch

from wsiseg.errors import EXIT_INTERRUPTED, ConfigError, ModelError, exit_status
from wsiseg.inference.config import PRECISIONS
from wsiseg.inference.stitcher import CopyDone, recorded_event
from wsiseg.inference.tta import TTA_VIEWS, check_tta, entropy, unview, view_information, view_of

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What a segmentation network may return: logits, or logits first in a tuple or list, or
#: logits under ``"out"`` (torchvision's segmentation models).
NetworkOutput = (torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]
                 | dict[str, torch.Tensor])


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; other names are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available; use --device cpu")
    return device


@dataclass(frozen=True)
class Normalisation:
    """How a network wants its input: channels in ``channel_order``, ``(x / 255 - mean) / std``.

    ``mean`` and ``std`` are in 0..1 units and listed in RGB order; training and inference
    both normalise through :meth:`normaliser`, so a network sees the same numbers in each.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"

    def normaliser(self, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function from uint8 (n, H, W, 3) RGB on ``device`` to float32 (n, 3, H, W) input."""
        bgr = self.channel_order.upper() == "BGR"
        order = [2, 1, 0] if bgr else [0, 1, 2]
        mean = torch.tensor([self.mean[i] for i in order], dtype=torch.float32)
        std = torch.tensor([self.std[i] for i in order], dtype=torch.float32)
        # One multiply-add per pixel, folded from (x / 255 - mean) / std.
        scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(device)
        shift = (-mean / std).view(1, 3, 1, 1).to(device)

        def normalise(patches: torch.Tensor) -> torch.Tensor:
            # (n, H, W, 3) seen as (n, 3, H, W) is channels_last already: no copy, and
            # convolutions run much faster on it (a 1x1 convolution 40x on the CPU).
            x = patches.permute(0, 3, 1, 2)
            if bgr:
                x = x.flip(1)
            return x.to(torch.float32).mul_(scale).add_(shift)

        return normalise


#: Names of the ``amp`` settings; none, off and fp32 all mean no autocast.


def autocast_dtype(device: torch.device, amp: str | None) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``; None runs the network in float32.

    On CUDA, auto and bf16 take bf16 where the GPU has it (else fp16) and fp16 takes fp16. On
    the CPU, auto takes bf16 where the CPU multiplies bf16 in hardware (:func:`native_cpu_bf16`)
    and float32 elsewhere, where bf16 is emulated many times slower; bf16 takes bf16 (with a
    warning where it is emulated); fp16 is refused. Other devices run float32.
    """
    if amp is not None and amp not in PRECISIONS:
        raise ConfigError(f"unknown precision {amp!r}; use auto, bf16, fp16 or fp32")
    if amp in (None, "none", "off", "fp32"):
        return None
    if device.type == "cuda":
        if amp == "fp16":
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type != "cpu":
        return None
    if amp == "fp16":
        raise ConfigError("precision fp16 runs on CUDA only; on the CPU use --precision auto, "
                          "bf16 or fp32")
    native = native_cpu_bf16()
    if amp == "bf16" and not native:
        logger.warning("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 is emulated "
                       "and runs many times slower than fp32; --precision auto picks fp32 here")
    return torch.bfloat16 if native or amp == "bf16" else None


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), as oneDNN uses."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch that cannot tell: take none
        return False


def precision_name(dtype: torch.dtype | None) -> str:
    """How a result records the arithmetic of autocast ``dtype``: fp32, bf16 or fp16."""
    names = {torch.bfloat16: "bf16", torch.float16: "fp16"}
    return "fp32" if dtype is None else names.get(dtype, "fp32")


def device_name(device: torch.device) -> str:
    """How a result records ``device``: cpu, or cuda:N and the GPU's name."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} {torch.cuda.get_device_name(index)}"


class Predictor:
    """Runs a segmentation network on uint8 (n, P, P, 3) RGB patches.

    Patches go to the device as uint8 (on CUDA through reused pinned buffers, copied on a side
    stream while the network works on the batch before) and are normalised there; the network
    runs under ``torch.inference_mode`` (and bf16/fp16 autocast on CUDA); the result is the
    softmax over classes in float32, (n, C, P, P), left on the device for the stitcher.

    ``tta`` (one of :data:`~wsiseg.inference.tta.TTA_MODES`) runs the network on each view
    of the batch in turn (4 for ``flip``, 8 for ``d4``: that many times the network's time)
    and returns the mean of their probabilities, each mapped back onto the patches.

    Called from the main thread, the network runs on a thread of its own while the main
    thread waits for it, so that a Ctrl-C (or a SIGTERM made one) stops the run at once, and
    its clean-up runs, even while the network is inside a long native call (a TorchScript
    loop) that never returns to Python. A network whose output is NaN or infinite raises a
    :class:`~wsiseg.errors.ModelError` naming ``name``, the model (on CUDA a few batches
    later, without stopping the host for it, and at the latest in :meth:`check_outputs`).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        num_classes: int,
        normalisation: Normalisation,
        device: torch.device,
        amp: str | None = "auto",
        compile: bool = False,
        tta: str = "none",
        name: str = "the model",
    ) -> None:
        check_tta(tta)
        self.name = name
        self._runner = _NetworkThread()
        self.tta = tta
        self._views = TTA_VIEWS[tta]
        self.device = device
        self.num_classes = num_classes
        self.module = module.to(device).eval()
        self._normalise = normalisation.normaliser(device)
        self.autocast_dtype = autocast_dtype(device, amp)
        self._host_to_device: _HostToDevice | None = None
        self._outputs = _OutputChecks(device, name)
        self._network: Callable[[torch.Tensor], NetworkOutput] = self.module
        self._compiled_batch: int | None = None  # the batch size the graph was compiled for
        if compile:
            if isinstance(self.module, torch.jit.ScriptModule):
                logger.warning("a TorchScript model cannot be compiled with torch.compile; "
                               "running it as it is")
            else:
                # One fixed shape: a later, shorter batch is padded rather than compiled again.
                self._network = torch.compile(self.module, dynamic=False)
                self._compiled_batch = 0

    def to_device(self, patches: npt.NDArray[np.uint8]) -> torch.Tensor:
        t = torch.from_numpy(patches)
        if self.device.type != "cuda":
            return t
        if self._host_to_device is None:
            self._host_to_device = _HostToDevice(self.device)
        return self._host_to_device.copy(t)

    def __call__(self, patches: npt.NDArray[np.uint8]) -> torch.Tensor:
        """Class probabilities, float32 (n, C, P, P) on the device, of uint8 (n, P, P, 3)."""
        return self._runner.run(self._predict, patches)[0]

    def with_information(self, patches: npt.NDArray[np.uint8]
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As calling it, and with more than one test-time view the views' mutual information
        between class and view, float32 (n, P, P) (``tta.view_information``); else None."""
        return self._runner.run(self._predict, patches, len(self._views) > 1)

    @torch.inference_mode()
    def _predict(self, patches: npt.NDArray[np.uint8], information: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = len(patches)
        if self._compiled_batch is not None:
            self._compiled_batch = self._compiled_batch or n
            if n < self._compiled_batch:
                pad = np.zeros((self._compiled_batch - n, *patches.shape[1:]), patches.dtype)
                patches = np.concatenate([patches, pad])
        x = self._normalise(self.to_device(patches))
        probs = self._probabilities(x, n)  # the first view is the patches as they are
        spread = entropy(probs) if information else None  # the views' entropies, summed
        for turns, mirrored in self._views[1:]:
            # Quarter turns leave a channels_last tensor strided neither way; convolutions
            # want it channels_last again.
            view = view_of(x, turns, mirrored).contiguous(memory_format=torch.channels_last)
            seen = unview(self._probabilities(view, n), turns, mirrored)
            probs += seen
            if spread is not None:
                spread += entropy(seen)
        if len(self._views) > 1:
            probs.div_(len(self._views))
        if spread is None:
            return probs, None
        return probs, view_information(probs, spread.div_(len(self._views)))

    def _probabilities(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Softmax of the network on normalised ``x``, float32 (n, C, H, W), contiguous."""
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                logits = self._network(x)
        else:
            logits = self._network(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        elif isinstance(logits, dict):
            logits = logits["out"]
        m, _, p, q = x.shape
        if logits.shape != (m, self.num_classes, p, q):
            raise ModelError(
                f"the network returned logits of shape {tuple(logits.shape)}, expected "
                f"{(m, self.num_classes, p, q)} from its card; check the card's classes and "
                "that the network outputs logits at the input size"
            )
        # Softmax over classes is several times faster on a contiguous (n, C, P, P) tensor
        # than on a channels_last one, and the stitcher reads the classes as planes.
        probs = torch.softmax(logits[:n].float().contiguous(), dim=1)
        # NaN or an infinite logit makes the softmax NaN: one reduction finds either, where
        # argmax would quietly call it background.
        self._outputs.add((~torch.isfinite(probs)).flatten(1).any(dim=1).sum(), n)
        return probs

    def check_outputs(self) -> None:
        """Raise :class:`~wsiseg.errors.ModelError` if any batch so far had NaN or infinite
        output. On the CPU each batch is checked as it is made; on CUDA its check is read back
        behind the network's work, without stopping the host, at most :data:`CHECKS_IN_FLIGHT`
        batches later: call this before the probabilities are used for good."""
        self._outputs.drain(wait=True)


_abandoned_registered = False


def _abandoned(status: int) -> None:
    """End the process, when it exits, without the interpreter's tear-down, with exit status
    ``status`` (that of the interrupt): a network call left running (inside torch) would crash
    the tear-down ("terminate called", exit status -6)."""
    global _abandoned_registered
    if _abandoned_registered:
        return
    _abandoned_registered = True

    def exit_now() -> None:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)

    atexit.register(exit_now)


class _NetworkThread:
    """Runs calls on one daemon thread while the calling main thread waits, interruptibly.

    A signal is handled in the main thread only, between Python instructions: a main thread
    inside a native call that does not return (a TorchScript loop, a long kernel) would never
    see a Ctrl-C. Waiting on a future instead, it does, at once; the call left running is
    abandoned (a daemon thread ends with the process). Calls from other threads (a dask
    worker's) run where they are made.
    """

    #: Seconds without a call after which the thread ends (a later call starts another).
    IDLE_SECONDS = 2.0

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue())
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, func: Callable[..., T], *args: Any) -> T:
        if threading.current_thread() is not threading.main_thread():
            return func(*args)
        future: Future[T] = Future()
        try:  # a signal may come at any instruction from here, the call queued or not
            with self._lock:
                self._calls.put((future, func, args))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name="wsiseg-network",
                                                    daemon=True)
                    self._thread.start()
            return future.result()  # a signal interrupts this wait
        except BaseException as err:
            # A call not started yet is cancelled (the thread skips it); one running is left
            # behind in native code.
            if not future.cancel() and not future.done():
                _abandoned(exit_status(err) if isinstance(err, KeyboardInterrupt)
                           else EXIT_INTERRUPTED)
            raise

    def _serve(self) -> None:
        while True:
            try:
                future, func, args = self._calls.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:  # no call can be put between this check and the end
                    if self._calls.empty():
                        self._thread = None
                        return
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func(*args))
            except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(err)
            del future, func, args  # not the last batch kept while idle


#: Batches whose NaN check may still be on its way back from a CUDA device.
CHECKS_IN_FLIGHT = 2


class _OutputChecks:
    """The NaN checks of a predictor's batches: the count of windows with a NaN or infinite
    probability, made on the device. Reading it back at once would stop the host until the
    network is done with the batch (the GPU then idles while the host prepares the next):
    on CUDA it comes back through pinned memory, and is read once its copy is done."""

    def __init__(self, device: torch.device, name: str) -> None:
        self.device = device
        self.name = name
        self.pending: collections.deque[tuple[torch.Tensor, CopyDone | None, int]] = (
            collections.deque())

    def add(self, bad: torch.Tensor, n: int) -> None:
        done = None
        if self.device.type == "cuda":
            host = torch.empty((), dtype=bad.dtype, pin_memory=True)
            host.copy_(bad, non_blocking=True)
            bad = host
            done = recorded_event()
        self.pending.append((bad, done, n))
        self.drain(wait=False)

    def drain(self, wait: bool) -> None:
        """Read the checks whose copy is done (all of them with ``wait``; the oldest while
        more than :data:`CHECKS_IN_FLIGHT` are out); raise for the first bad one."""
        while self.pending:
            bad, done, n = self.pending[0]
            if done is not None:
                if wait or len(self.pending) > CHECKS_IN_FLIGHT:
                    done.synchronize()
                elif not done.query():
                    return
            self.pending.popleft()
            count = int(bad)
            if count:
                self.pending.clear()
                raise ModelError(
                    f"{self.name} returned NaN or infinite logits for {count} of {n} windows; "
                    "its weights are broken (a training run that diverged?) or it overflows in "
                    "this precision: check the model, or run it on the CPU (--device cpu)")


class _HostToDevice:
    """Batches to a CUDA device through two reused pinned buffers, copied on a side stream.

    While the network works on one batch, the next is copied in on the side stream; the
    compute stream waits for that copy only. A buffer is refilled once its previous copy has
    left it (its event), so the host never blocks on the network.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        # torch leaves Stream.__new__ and Event.__new__ unannotated.
        self.stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self.buffers: list[torch.Tensor | None] = [None, None]
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0

    def copy(self, batch: torch.Tensor) -> torch.Tensor:
        i, self.turn = self.turn, 1 - self.turn
        copied = self.copied[i]
        if copied is not None:
            copied.synchronize()  # the buffer's last copy has left it
        buffer = self.buffers[i]
        if buffer is None or buffer.numel() < batch.numel():
            buffer = self.buffers[i] = torch.empty(batch.numel(), dtype=batch.dtype,
                                                   pin_memory=True)
        host = buffer[: batch.numel()].view(batch.shape)
        host.copy_(batch)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            on_device = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]  # see __init__
            event.record(self.stream)
        self.copied[i] = event
        compute.wait_stream(self.stream)
        # Made on the side stream, used on the compute stream: keep the allocator from
        # handing its memory out again before the compute stream is done with it.
        on_device.record_stream(compute)
        return on_device


def segment_image(predictor: Predictor, image: npt.NDArray[np.uint8], multiple: int = 32
                  ) -> npt.NDArray[np.float32]:
    """Class probabilities (K, H, W) of a whole (H, W, 3) uint8 image, as a numpy array.

    The image is mirror-padded up to a multiple of ``multiple`` (the network's coarsest
    stride), so every pixel sees real context, and the padding is cut off again.
    """
    h, w = image.shape[:2]
    pad_h, pad_w = -h % multiple, -w % multiple
    mode: Literal["reflect", "edge"] = "reflect" if pad_h < h and pad_w < w else "edge"
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    probs = predictor(np.ascontiguousarray(padded[None]))[0, :, :h, :w]
    predictor.check_outputs()
    return probs.float().cpu().numpy()
