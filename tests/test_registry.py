import pytest

import vitkit
from vitkit.errors import VitkitError


def test_list_models_pattern():
    vits = vitkit.list_models("vit_*")
    assert "vit_base_patch16_224" in vits and all(n.startswith("vit_") for n in vits)
    assert vitkit.list_models() == sorted(vitkit.list_models())


def test_unknown_model_suggests_close_names():
    with pytest.raises(VitkitError, match="did you mean vit_base_patch16_224"):
        vitkit.create_model("vit_base_patch16_244")


def test_unknown_override_names_the_field():
    with pytest.raises(VitkitError, match="unknown ViTConfig field.*depht"):
        vitkit.create_model("vit_tiny_patch16_224", depht=3)


def test_invalid_override_is_a_clear_error():
    with pytest.raises(VitkitError, match="not a multiple of patch_size"):
        vitkit.create_model("vit_tiny_patch16_224", img_size=100)


def test_overrides_apply():
    model = vitkit.create_model("vit_tiny_patch16_224", num_classes=3, img_size=64, in_chans=1, drop_path_rate=0.1)
    c = model.config
    assert (c.num_classes, c.img_size, c.in_chans, c.drop_path_rate) == (3, 64, 1, 0.1)
    assert model.model_name == "vit_tiny_patch16_224"
