"""The registry, the ResNet encoders and HSP-Net; every registered model gets the same checks."""

from __future__ import annotations

import pytest
import torch

from wsiseg.errors import ModelError
from wsiseg.models import (
    DIAGNOSTIC_CLASSES,
    ModelCard,
    create_model,
    default_card,
    list_models,
    load_model,
    register_model,
    save_checkpoint,
)
from wsiseg.models.hspnet import DSBlock, HSPNet
from wsiseg.models.resnet import create_encoder

PAPER_HSPNET_R101 = 69.70e6  # reported in the HSP-Net paper (Table 5)
MEASURED_HSPNET_R101 = 68_220_869  # this implementation, 5 classes; recorded in models/README.md


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_the_hspnet_variants_sorted():
    names = list_models()
    assert names == sorted(names)
    assert {"hspnet_r18", "hspnet_r34", "hspnet_r101"} <= set(names)
    names.append("not_a_model")  # a copy: the registry itself cannot be changed this way
    assert "not_a_model" not in list_models()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelError, match=r"unknown model 'hspnet_r50'.*hspnet_r18.*hspnet_r34"):
        create_model("hspnet_r50")
    with pytest.raises(ModelError, match="hspnet_r101"):
        default_card("nope")


def test_none_keeps_defaults_and_values_override():
    assert create_model("hspnet_r18", num_classes=None).head[-1].out_channels == 5
    model = create_model("hspnet_r18", num_classes=3, head_width=16, ds_widths=None)
    assert model.head[-1].out_channels == 3 and model.head[0][0].out_channels == 16


def test_bad_arguments_are_model_errors():
    with pytest.raises(ModelError, match="num_class"):
        create_model("hspnet_r18", num_class=3)
    with pytest.raises(ModelError, match="num_classes"):
        create_model("hspnet_r18", num_classes=0)
    with pytest.raises(ModelError, match="ds_widths"):
        create_model("hspnet_r18", ds_widths=[32, 64])


def test_registering_a_name_twice_is_refused():
    def hspnet_r34():  # same name as a registered factory
        raise AssertionError("never called")

    with pytest.raises(ModelError, match="registered twice"):
        register_model(default_card=default_card("hspnet_r34"))(hspnet_r34)
    assert create_model("hspnet_r34") is not None


def test_default_cards_describe_the_five_class_diagnostic_models():
    for name in ("hspnet_r18", "hspnet_r34", "hspnet_r101"):
        card = default_card(name)
        assert card.name == card.architecture == name
        assert card.classes == DIAGNOSTIC_CLASSES[:5]
        assert card.arguments == {"num_classes": 5}
        assert (card.mpp, card.patch_size, card.stride) == (1.0, 400, 100)
        assert card.mean == (0.485, 0.456, 0.406) and card.std == (0.229, 0.224, 0.225)


# --- every registered model -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_shapes_and_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(0)
    card = default_card(name)
    assert ModelCard.from_dict(card.to_dict()) == card
    model = create_model(name, **card.arguments).eval()
    k = card.num_classes
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 400, 400))
        assert out.shape == (1, k, 400, 400) and torch.isfinite(out).all()
        x = torch.randn(2, 3, 130, 98)  # not divisible by 32
        out = model(x)
        assert out.shape == (2, k, 130, 98) and torch.isfinite(out).all()
        # The two images of a batch do not mix (BatchNorm in eval mode).
        # (Untrained logits are large, so the tolerance is relative to their scale.)
        alone = model(x[1:])[0]
        assert (alone - out[1]).abs().max() <= 1e-5 * out.abs().max()

    path = save_checkpoint(tmp_path / f"{name}.pt", model, card)
    loaded = load_model(path)
    assert loaded.card == card and loaded.trained and not loaded.module.training
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), out)


# --- encoders -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected, widths", [
    ("resnet18", 11.18e6, (64, 128, 256, 512)),
    ("resnet34", 21.28e6, (64, 128, 256, 512)),
    ("resnet50", 23.51e6, (256, 512, 1024, 2048)),
    pytest.param("resnet101", 42.50e6, (256, 512, 1024, 2048), marks=pytest.mark.slow),
])
def test_resnet_encoders_counts_strides_and_torchvision_keys(name, expected, widths):
    encoder = create_encoder(name).eval()
    count = n_params(encoder)
    print(f"{name}: {count:,} parameters")
    assert abs(count - expected) / expected < 0.005
    assert encoder.out_channels == widths
    with torch.inference_mode():
        feats = encoder(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (w, 64 // s, 96 // s) for w, s in zip(widths, (4, 8, 16, 32), strict=True)]
    keys = set(encoder.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight",
            "layer2.0.downsample.0.weight", "layer4.1.bn2.num_batches_tracked"} <= keys
    assert not any(k.startswith("fc.") for k in keys)
    if widths[0] == 256:  # Bottleneck: expansion 4, stride on the 3x3 conv, downsample in layer1
        assert "layer1.0.downsample.1.weight" in keys and "layer4.2.conv3.weight" in keys
        assert encoder.layer2[0].conv2.stride == (2, 2) and encoder.layer2[0].conv1.stride == (1, 1)


def test_unknown_encoder():
    with pytest.raises(ModelError, match="resnet34"):
        HSPNet(encoder="resnet35")


# --- HSP-Net ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_hspnet_r101_parameter_count_against_the_paper():
    count = n_params(create_model("hspnet_r101", num_classes=5))
    print(f"hspnet_r101 (5 classes): {count:,} parameters; paper: 69.70M "
          f"({(count - PAPER_HSPNET_R101) / PAPER_HSPNET_R101:+.2%})")
    assert abs(count - PAPER_HSPNET_R101) / PAPER_HSPNET_R101 < 0.03
    assert count == MEASURED_HSPNET_R101


def test_hspnet_structure_follows_models_md():
    model = create_model("hspnet_r34")
    assert [b.project[0].out_channels for b in model.vhsp] == [32, 64, 128, 256]
    assert [b.branches[0][0].in_channels for b in model.vhsp] == [64, 128, 256, 512]
    assert (model.hhsp.branches[0][0].in_channels, model.hhsp.project[0].out_channels) == (480, 256)
    dilated = [b[0] for b in model.hhsp.branches[1:]]
    assert [c.dilation for c in dilated] == [(6, 6), (12, 12), (18, 18)]
    assert all(c.kernel_size == (3, 3) and c.padding == c.dilation for c in dilated)
    assert model.hhsp.project[0].in_channels == 5 * 256
    convs = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3
    assert [c.bias is None for c in convs] == [True, True, False]


def test_assumed_details_are_arguments():
    model = HSPNet("resnet18", num_classes=2, ds_widths=(8, 8, 8, 8), hhsp_width=16,
                   dilations=(2, 4), head_width=12).eval()
    assert model.hhsp.branches[0][0].in_channels == 32
    assert model.hhsp.project[0].in_channels == 4 * 16  # pool, 1x1 and two dilated branches
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 70, 50)).shape == (1, 2, 70, 50)


def test_ds_block_pooled_branch_and_batch_norm_modes():
    block = DSBlock(16, 8).eval()
    x = torch.randn(1, 16, 5, 7)
    with torch.inference_mode():
        assert block(x).shape == (1, 8, 5, 7)  # batch 1 works in eval mode
    block.train()
    y = block(torch.randn(2, 16, 5, 7))
    y.sum().backward()
    assert block.pool[1][0].weight.grad is not None
    # Documented limit: BatchNorm on the pooled 1x1 map needs batches > 1 in training.
    with pytest.raises(ValueError):
        block(x)
