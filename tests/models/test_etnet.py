"""ET-Net: parameter count, shapes, training outputs, dilation, checkpoints and bad arguments."""

from __future__ import annotations

import pytest
import torch

from wsiseg.errors import ModelError
from wsiseg.models import create_model, default_card, load_model, save_checkpoint
from wsiseg.models.etnet import GLAND_CLASSES, ETNet
from wsiseg.training.losses import criterion_for
from wsiseg.training.losses.etnet import ETNetCriterion

SPEC_ETNET = 29.9e6  # MODELS.md, "ET-Net": about 29.9M parameters
MEASURED_ETNET = 29_303_923  # this implementation, default card (2 classes)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # ResNet-50 on the CPU: a second thread mostly adds start-up cost to these small inputs.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> ETNet:
    torch.manual_seed(0)
    return create_model("etnet", **default_card("etnet").arguments).eval()


@pytest.mark.slow
def test_parameter_count_against_the_spec(model):
    count = n_params(model)
    print(f"etnet (2 classes): {count:,} parameters; MODELS.md: 29.9M "
          f"({(count - SPEC_ETNET) / SPEC_ETNET:+.2%})")
    assert count == MEASURED_ETNET
    assert abs(count - SPEC_ETNET) / SPEC_ETNET < 0.03
    # The ResNet-50 encoder (23.51M) is the bulk; dilating it adds nothing.
    assert n_params(model.encoder) == 23_508_032
    assert n_params(create_model("etnet", output_stride=32)) == MEASURED_ETNET


def test_default_card_is_binary_gland_segmentation_on_512_crops():
    card = default_card("etnet")
    assert card.name == card.architecture == "etnet"
    assert card.classes == GLAND_CLASSES
    assert [c.name for c in card.classes] == ["background", "gland"]
    assert card.arguments == {"num_classes": 2}
    assert (card.mpp, card.patch_size, card.stride) == (0.62, 512, 256)
    assert ETNet.loss == "etnet" and isinstance(criterion_for(ETNet()), ETNetCriterion)


@pytest.mark.slow
def test_forward_at_400_is_finite_with_the_input_size(model):
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 400, 400))
    assert out.shape == (1, 2, 400, 400)
    assert torch.isfinite(out).all()


def test_forward_train_keys_shapes_and_logits_equal_forward(model):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 70, 90)  # not a multiple of 16 or 32
    with torch.inference_mode():
        train_out = model.forward_train(x)
        logits = model(x)
    assert set(train_out) == {"logits", "edge"}
    assert train_out["logits"].shape == (2, 2, 70, 90)
    assert train_out["edge"].shape == (2, 1, 70, 90)
    assert torch.isfinite(train_out["edge"]).all()
    assert torch.equal(train_out["logits"], logits)


@pytest.mark.slow
def test_encoder_is_dilated_to_output_stride_16_by_default():
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        dilated = [f.shape[-2:] for f in ETNet().eval().encoder(x)]
        plain = [f.shape[-2:] for f in ETNet(output_stride=32).eval().encoder(x)]
    assert dilated == [(16, 24), (8, 12), (4, 6), (4, 6)]
    assert plain == [(16, 24), (8, 12), (4, 6), (2, 3)]
    # Same weights either way, so published ResNet-50 state dicts load into both.
    assert ETNet().state_dict().keys() == ETNet(output_stride=32).state_dict().keys()


@pytest.mark.slow
def test_checkpoint_round_trip_gives_identical_outputs(model, tmp_path):
    x = torch.randn(1, 3, 48, 40)
    path = save_checkpoint(tmp_path / "etnet.pt", model, default_card("etnet"))
    loaded = load_model(path)
    assert isinstance(loaded.module, ETNet) and not loaded.module.training
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), model(x))
        assert torch.equal(loaded.module.forward_train(x)["edge"], model.forward_train(x)["edge"])


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes = 0"),
    ({"num_classes": 2.0}, "num_classes"),
    ({"output_stride": 8}, "output_stride = 8 .*16"),
    ({"decoder_reduction": 0}, "decoder_reduction"),
    ({"weighted_reduction": -1}, "weighted_reduction"),
    ({"edge_width": True}, "edge_width"),
    ({"edge_channels": 64}, "edge_channels"),
])
def test_bad_arguments_are_model_errors(kwargs, match):
    with pytest.raises(ModelError, match=match):
        create_model("etnet", **kwargs)


def test_unknown_encoder_is_a_model_error():
    with pytest.raises(ModelError, match="resnet50"):
        ETNet(encoder="resnet51")


@pytest.mark.slow
def test_training_step_with_batch_2_gives_finite_gradients():
    torch.manual_seed(2)
    net = ETNet(num_classes=3).train()
    criterion = criterion_for(net)
    x = torch.randn(2, 3, 64, 72)
    target = torch.randint(0, 3, (2, 64, 72))
    target[:, :4] = 255
    loss, parts = criterion(net.forward_train(x), {"target": target})
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"seg", "edge"}
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # Both heads learn: the edge map's conv and the classifier get gradients.
    assert net.egm.edge.weight.grad.abs().sum() > 0
    assert net.wam.classifier.weight.grad.abs().sum() > 0
