"""Training: every network learns, runs are reproducible and resumable, checkpoints load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.errors import ConfigError, OutputError
from wsiseg.models import create_model, default_card, export_model, list_models, load_model
from wsiseg.models.protocol import training_outputs
from wsiseg.testing import write_annotated_folder
from wsiseg.training.config import TrainConfig
from wsiseg.training.loop import train
from wsiseg.training.losses import criterion_for

SCHEME = Path(__file__).resolve().parents[2] / "examples" / "glas_classes.json"
TINY = {"ds_widths": [4, 4, 4, 4], "hhsp_width": 8, "head_width": 8}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("glands")
    write_annotated_folder(path, count=6, size=(320, 384))
    return path


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    base = {"model": "hspnet_r18", "data": data, "out": out, "name": "tiny", "arguments": TINY,
            "classes": SCHEME, "attributes": data / "grades.csv", "image_mpp": 0.5,
            "split_by": "patient_id", "val_fraction": 0.34, "epochs": 1, "batch_size": 2,
            "crop_size": 64, "optimizer": "adamw", "lr": 1e-3, "encoder_lr_scale": 1.0,
            "amp": "fp32", "seed": 3, "loss_options": {"dice_weight": 0.5}}
    base.update(kw)
    return TrainConfig(**base)


def _states_equal(a: Path, b: Path) -> bool:
    sa = torch.load(a, weights_only=True)["state_dict"]
    sb = torch.load(b, weights_only=True)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_two_training_steps_lower_the_loss(name):
    torch.manual_seed(0)
    card = default_card(name)
    module = create_model(name, **card.arguments).train()
    criterion = criterion_for(module)
    x = torch.randn(2, 3, 64, 64)
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, 16:48, 16:48] = card.num_classes - 1
    batch = {"target": target, "grade": torch.tensor([0, -1])}
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks for every evaluation
        outputs = training_outputs(module, x)
        return criterion(outputs, batch)[0]

    before = loss()
    for _ in range(2):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        after = loss()
    assert torch.isfinite(before) and after < before


@pytest.mark.slow
def test_training_writes_loadable_checkpoints_and_is_reproducible(data, tmp_path):
    first = train(tiny_config(data, tmp_path / "a"))
    second = train(tiny_config(data, tmp_path / "b"))
    assert _states_equal(first.last, second.last)
    lines = first.metrics.read_text().splitlines()
    assert lines[0].startswith("epoch,lr,train_loss,train_ce,train_dice,val_mean_dice")
    assert len(lines) == 2
    loaded = load_model(first.best)
    assert loaded.trained and [c.name for c in loaded.card.classes] == [
        "background", "other tissue", "normal", "tumour"]
    assert loaded.card.name == "tiny" and loaded.card.arguments["head_width"] == 8
    other_seed = train(tiny_config(data, tmp_path / "c", seed=4))
    assert not _states_equal(first.last, other_seed.last)


@pytest.mark.slow
def test_resume_continues_exactly_where_it_stopped(data, tmp_path, monkeypatch):
    straight = train(tiny_config(data, tmp_path / "straight", epochs=2))
    from wsiseg.training import state

    write_history = state.write_history

    def crash_after_first_epoch(path, history):
        write_history(path, history)
        raise KeyboardInterrupt

    monkeypatch.setattr(state, "write_history", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(data, tmp_path / "resumed", epochs=2))
    monkeypatch.setattr(state, "write_history", write_history)
    resumed = train(tiny_config(data, tmp_path / "resumed", epochs=2, resume=True))
    assert resumed.epochs_run == 2
    assert _states_equal(straight.last, resumed.last)
    assert straight.metrics.read_text().splitlines()[1].split(",")[:3] == \
        resumed.metrics.read_text().splitlines()[1].split(",")[:3]
    with pytest.raises(ConfigError, match=r"other settings \(lr\)"):
        train(tiny_config(data, tmp_path / "resumed", epochs=3, lr=5e-3, resume=True))
    with pytest.raises(OutputError, match="already holds a training run.*--resume"):
        train(tiny_config(data, tmp_path / "resumed", epochs=3))


@pytest.mark.slow
def test_export_installs_fp16_weights_with_a_checked_card(data, tmp_path, monkeypatch):
    result = train(tiny_config(data, tmp_path / "run"))
    card_path = export_model(result.best, tmp_path / "cards", "tiny-glands", "a test model")
    weights = torch.load(tmp_path / "cards" / "tiny-glands.pt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    from wsiseg.models import loading

    monkeypatch.setattr(loading, "CARDS_DIR", card_path.parent)
    loaded = load_model("tiny-glands")
    reference = load_model(result.best)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert next(loaded.module.parameters()).dtype == torch.float32
        diff = (loaded.module(x) - reference.module(x)).abs().max()
    assert diff < 0.05  # fp16 rounding only
    assert loaded.card.weights_sha256 is not None and loaded.card.description == "a test model"


@pytest.mark.slow
def test_cli_trains_and_reports_bad_input_in_one_line(data, tmp_path):
    runner = CliRunner()
    args = ["train", "hspnet_r18", str(data), "--out", str(tmp_path / "cli"), "--classes",
            str(SCHEME), "--attributes", str(data / "grades.csv"), "--epochs", "1",
            "--batch-size", "2", "--crop-size", "64", "--amp", "fp32", "--quiet",
            "--arg", "ds_widths=[4,4,4,4]", "--arg", "hhsp_width=8", "--arg", "head_width=8",
            "--val-fraction", "0.34"]
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "--image-mpp" in result.output
    result = runner.invoke(main, args + ["--image-mpp", "0.5"])
    assert result.exit_code == 0, result.output
    assert "best.pt: best mean_dice" in result.output
    assert (tmp_path / "cli" / "best.pt").is_file()
    result = runner.invoke(main, args + ["--image-mpp", "0.5", "--arg", "oops"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def test_a_valid_config_passes_validation(data, tmp_path):
    tiny_config(data, tmp_path / "ok")
    tiny_config(data, tmp_path / "ok", val_data=data, val_fraction=0.0, crop_size=None,
                threads=1, amp="auto")


@pytest.mark.parametrize("field, value, named", [
    ("image_mpp", None, "--image-mpp"),
    ("image_mpp", -0.5, r"resolution -0.5 um/px.*--image-mpp"),
    ("val_fraction", 1.0, r"validation fraction 1.0.*--val-data"),
    ("epochs", 0, r"epochs 0.*--epochs"),
    ("batch_size", 1, r"batch size 1.*--batch-size"),
    ("crop_size", 4, r"crop size 4 px.*--crop-size"),
    ("crops_per_image", 0, r"crops per image 0.*--crops-per-image"),
    ("optimizer", "adam", r"optimizer 'adam'; use sgd or adamw"),
    ("lr", 0.0, r"learning rate 0.0.*--lr"),
    ("encoder_lr_scale", -1.0, r"scale -1.0.*--encoder-lr-scale"),
    ("weight_decay", -1e-4, r"weight decay -0.0001.*--weight-decay"),
    ("warmup_epochs", -1, r"warm-up epochs -1.*--warmup-epochs"),
    ("select_by", "dice", r"select checkpoints by 'dice'; use mean_dice"),
    ("amp", "half", r"precision 'half'; use auto, bf16, fp16 or fp32"),
    ("threads", 0, r"threads 0.*--threads"),
    ("seed", -1, r"seed -1.*--seed"),
    ("on_glass", 1.5, r"on-glass share 1.5.*--on-glass"),
    ("stain_jitter", -0.1, r"stain jitter -0.1.*--stain-jitter"),
])
def test_validate_refuses_each_bad_value_naming_it(data, tmp_path, field, value, named):
    # A config is checked when it is made, so no run can start from a bad one.
    with pytest.raises(ConfigError, match=named) as err:
        tiny_config(data, tmp_path / "run", **{field: value})
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("amp", [pytest.param("auto", marks=pytest.mark.slow),
                                 pytest.param("bf16", marks=pytest.mark.slow),
                                 pytest.param("fp16", marks=pytest.mark.slow), "fp32"])
def test_training_and_inference_take_the_same_precision(data, tmp_path, amp):
    from wsiseg.inference.predictor import Predictor, native_cpu_bf16
    from wsiseg.training import loop

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        config = tiny_config(data, tmp_path / "run", amp=amp, device=device)
        prepared = loop._prepare_data(config)
        if device == "cpu" and amp == "fp16":  # the CPU has no fp16 to give
            with pytest.raises(ConfigError, match="^precision fp16 runs on CUDA only"):
                loop._build_run(config, prepared)
            continue
        run = loop._build_run(config, prepared)
        predictor = Predictor(run.module, prepared.card.num_classes, run.normalisation,
                              run.device, amp=amp)
        assert run.autocast == predictor.autocast_dtype
        if device == "cpu":
            # bf16 where asked for, or where auto finds it native; float32 elsewhere.
            bf16 = amp == "bf16" or (amp == "auto" and native_cpu_bf16())
            assert run.autocast == (torch.bfloat16 if bf16 else None)


def test_training_normalises_batches_as_inference_does(data, tmp_path):
    from wsiseg.inference.predictor import Predictor
    from wsiseg.training import loop

    config = tiny_config(data, tmp_path / "run")
    prepared = loop._prepare_data(config)
    run = loop._build_run(config, prepared)
    seen = []
    run.module.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    patches = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    Predictor(run.module, prepared.card.num_classes, run.normalisation, run.device)(patches)
    assert torch.equal(seen[0], run.normalise(torch.from_numpy(patches)))
