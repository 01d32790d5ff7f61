"""The files of a training run: ``best.pt``, ``last.pt`` (with what resuming needs) and the
history CSV, and reading ``last.pt`` back to resume."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wsiseg.atomic import atomic_write
from wsiseg.cards import ModelCard
from wsiseg.errors import ConfigError, OutputError
from wsiseg.models.loading import save_checkpoint
from wsiseg.training.config import TrainConfig
from wsiseg.training.metrics import Scores

TRAIN_STATE_VERSION = 1
LAST, BEST, METRICS = "last.pt", "best.pt", "metrics.csv"
#: Settings that may change when a run resumes: its length and how it is watched.
RESUME_MAY_CHANGE = frozenset({"epochs", "resume", "progress", "threads", "device",
                               "trust_code"})

#: A row of the history: the epoch, its learning rate, losses, scores and times.
HistoryRow = dict[str, Any]


@dataclass
class Progress:
    """The finished epochs of a run and the best so far: what ``last.pt`` keeps to resume."""

    history: list[HistoryRow] = field(default_factory=list)
    next_epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1


def save_epoch(config: TrainConfig, card: ModelCard, module: torch.nn.Module,
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               progress: Progress, epoch: int, best_scores: Scores | None) -> None:
    """Write ``best.pt`` (when ``best_scores`` are new), then ``last.pt`` and the history CSV."""
    out = Path(config.out)
    if best_scores is not None:
        save_checkpoint(out / BEST, module, card,
                        {"epoch": epoch, "scores": best_scores.to_dict()})
    save_checkpoint(out / LAST, module, card, {
        "train_state_version": TRAIN_STATE_VERSION, "config": config.to_json_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": epoch, "history": progress.history, "best_score": progress.best_score,
        "best_epoch": progress.best_epoch})
    write_history(out / METRICS, progress.history)


def read_state(path: Path) -> dict[str, Any]:
    """The training state in ``last.pt`` at ``path``; a one-line error if it holds none."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise OutputError(f"cannot resume from {path} ({type(err).__name__}: {err}); it is "
                          "damaged: delete it and start again") from err
    if not isinstance(state, dict) or state.get("train_state_version") != TRAIN_STATE_VERSION:
        raise OutputError(f"{path} holds no training state this wsiseg can resume; start a new "
                          "run in another --out")
    return state


def check_resumable(state: Mapping[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse to resume the run saved in ``state`` with settings other than it was run with."""
    # A setting added since the run began was at its default then.
    saved = {**TrainConfig.json_defaults(), **dict(state["config"])}
    now = config.to_json_dict()
    changed = sorted(k for k in now if k not in RESUME_MAY_CHANGE and saved.get(k) != now[k])
    if changed:
        raise ConfigError(f"{path} was trained with other settings ({', '.join(changed)}); "
                          "resume with the same settings or start a new run in another --out")


def progress_of(state: Mapping[str, Any]) -> Progress:
    """The progress a run saved in ``state`` had made."""
    return Progress(list(state["history"]), state["epoch"] + 1, state["best_score"],
                    state["best_epoch"])


def write_history(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """The history, a row per epoch; columns in the order they first appear."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: _cell(row.get(k)) for k in columns})


def _cell(v: object) -> object:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v
