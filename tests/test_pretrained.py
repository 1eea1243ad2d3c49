"""Shipped weights load offline through timm and still classify exactly as recorded when they were shipped."""
import os
from pathlib import Path

import pytest
import timm
import torch

import dynconv  # noqa: F401  (registers the models)
from cifar10_recipe.shipping import check_part, count_correct, read_metadata

PRETRAINED = timm.list_models("dynconv*", pretrained=True)


def test_shipped_weights_are_listed_and_present():
    assert {"dynconv_cifar_tiny.cpu_cifar10local", "dynconv_cifar_tiny_static.cpu_cifar10local",
            "dynconv_cifar_tiny_routed.cpu_cifar10local"} <= set(PRETRAINED)
    for name in PRETRAINED:
        path = Path(timm.models.get_pretrained_cfg(name).file)
        assert path.is_file(), f"{name}: {path} is not in the package"
        assert path.stat().st_size < 5e6


@pytest.mark.parametrize("name", PRETRAINED)
def test_metadata_states_accuracy_recipe_command_and_commit(name):
    metadata = read_metadata(Path(timm.models.get_pretrained_cfg(name).file))
    architecture, tag = name.split(".")
    assert metadata["model"] == architecture and metadata["tag"] == tag
    assert 0.5 < metadata["test_acc_fp32"] <= 1 and 0.5 < metadata["test_acc_recorded"] <= 1
    assert metadata["recipe"]["preset"] and metadata["command"].startswith("python examples/cifar10/train.py")
    assert len(metadata["commit"].removesuffix("-dirty")) == 40
    assert (Path(__file__).parents[1] / metadata["record"] / "summary.json").is_file()


def test_models_without_weights_refuse_pretrained():
    with pytest.raises(RuntimeError, match="No pretrained weights exist"):
        timm.create_model("dynconv_cifar_fast", pretrained=True)


@pytest.mark.slow  # the whole test set through each shipped network
@pytest.mark.skipif(not os.environ.get("CIFAR10_ROOT"), reason="needs the CIFAR-10 copy ($CIFAR10_ROOT)")
@pytest.mark.parametrize("name", PRETRAINED)
def test_shipped_weights_reproduce_their_recorded_check(name, cifar10_test_set):
    model = timm.create_model(name, pretrained=True)
    images, labels = check_part(*cifar10_test_set)
    metadata = read_metadata(Path(model.pretrained_cfg["file"]))
    assert len(labels) == metadata["check"]["images"]
    correct = count_correct(model, images, labels)
    # float32 on another CPU may flip an answer at a decision boundary; a changed model moves hundreds
    assert abs(correct - metadata["check"]["correct"]) <= 2, (correct, metadata["check"])
    # and a random-weight model of the same architecture does not pass
    assert abs(count_correct(timm.create_model(name.split(".")[0]), images, labels) - correct) > 200


@pytest.fixture(scope="module")
def cifar10_test_set():
    from cifar10_recipe.data import load_cifar10

    data = load_cifar10(os.environ["CIFAR10_ROOT"])
    return data.test_images, data.test_labels


def test_count_correct_on_known_predictions():
    class Fixed(torch.nn.Module):
        pretrained_cfg = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}

        def forward(self, x):  # predicts the class given by the first pixel's red value
            return torch.nn.functional.one_hot((x[:, 0, 0, 0] * 255).round().long(), 10).float()

    images = torch.zeros(7, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    labels = torch.tensor([0, 1, 2, 0, 0, 5, 0])
    assert count_correct(Fixed(), images, labels) == 4
    assert [len(t) for t in check_part(images, labels)] == [2, 2]


@pytest.mark.slow  # trains a run first
def test_collect_and_ship_a_finished_run(fake_cifar_root, tmp_path):
    """train.py -> collect_weights.py (float16) -> ship_weights.py: the shipped file loads through timm's file=."""
    from cifar10_recipe import cli as train
    from cifar10_recipe import collect_weights
    from tools import ship_weights

    run_dir = tmp_path / "static-run"
    assert train.main(["--preset", "tiny", "--block", "static", "--subset", "512", "--test-subset", "256",
                       "--batch-size", "64", "--epochs", "1", "--data-dir", str(fake_cifar_root),
                       "--out", str(run_dir)]) == 0
    assert collect_weights.main([str(run_dir), str(tmp_path / "missing"), "--out", str(tmp_path / "back"),
                                 "--half"]) == 0
    shipped = tmp_path / "shipped"
    assert ship_weights.main([str(tmp_path / "back" / "static-run"), "--model", "dynconv_cifar_tiny_static",
                              "--record", "examples/cifar10/records/cpu-equal-budget/timing-static",
                              "--data-dir", str(fake_cifar_root), "--out-dir", str(shipped), "--half"]) == 0
    path = shipped / "dynconv_cifar_tiny_static.cpu_cifar10local.safetensors"
    metadata = read_metadata(path)
    assert metadata["recipe"]["block"] == "static" and metadata["check"]["images"] == 2000
    assert metadata["stored_as"] == "float16"
    model = timm.create_model("dynconv_cifar_tiny_static", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    from cifar10_recipe.data import load_cifar10

    data = load_cifar10(str(fake_cifar_root))
    assert count_correct(model, *check_part(data.test_images, data.test_labels)) == metadata["check"]["correct"]
