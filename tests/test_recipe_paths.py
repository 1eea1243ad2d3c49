"""The recipe's paths that the end-to-end tests do not pin: patch whitening, the weight average (EMA), test-time
augmentation levels, the lr schedules' values, resume with EMA and temperature annealing, resume of the torchvision
loader, and the configuration's metadata. Oracles are written here, independently of the recipe's code."""
import json
import math

import pytest
import torch
from torch import nn

from cifar10_recipe import cli as train
from cifar10_recipe import run_manager, run_setup
from cifar10_recipe.config import TrainConfig, model_arguments, resolve_config, resumable_fields, upgrade_config_dict
from cifar10_recipe.evaluation import tta_logits
from cifar10_recipe.optimization import lr_factor
from cifar10_recipe.whitening import init_patch_whitening
from tests.threads import run_threads

QUICK = ["--preset", "tiny", "--subset", "512", "--test-subset", "128", "--batch-size", "64", "--deterministic",
         "--threads", run_threads()]
TIMING_KEYS = {"elapsed_s", "train_s", "images_per_s"}


def _history(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


# ------------------------------------------------------------------------------------------------------------------
#  Patch whitening
# ------------------------------------------------------------------------------------------------------------------


def test_patch_whitening_decorrelates_the_patches_it_was_fitted_on():
    torch.manual_seed(0)
    # correlated channels and neighbouring pixels, as in natural images
    base = torch.randn(64, 1, 18, 18)
    images = torch.cat([base, 0.8 * base + 0.2 * torch.randn_like(base), torch.randn_like(base)], dim=1)
    images = images + 0.5 * images.roll(1, dims=3)
    conv = nn.Conv2d(3, 2 * 3 * 2 * 2, kernel_size=2, bias=True)
    init_patch_whitening(conv, images, eps=0.0)
    with torch.no_grad():
        features = nn.functional.conv2d(images, conv.weight[:12])    # the eigenvector half, without the bias
    features = features.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = features.T @ features / len(features)
    torch.testing.assert_close(covariance, torch.eye(12), atol=1e-3, rtol=0)
    torch.testing.assert_close(conv.weight[12:], -conv.weight[:12])


def test_patch_whitening_rejects_a_conv_of_the_wrong_width():
    with pytest.raises(ValueError, match="needs a conv with 3 inputs and 24 outputs"):
        init_patch_whitening(nn.Conv2d(3, 16, kernel_size=2), torch.randn(2, 3, 8, 8))


@pytest.mark.slow  # a training run
def test_whitened_stem_trains_its_bias_only(fake_cifar_root, tmp_path):
    """--whiten on the fast model: the stem's weights stay the whitening filters through training."""
    run_dir = tmp_path / "run"
    assert train.main([*QUICK, "--model", "dynconv_cifar_fast", "--whiten", "--subset", "128", "--data-dir",
                       str(fake_cifar_root), "--out", str(run_dir)]) == 0
    from cifar10_recipe.checkpoint import load_checkpoint

    weights, _ = load_checkpoint(run_dir / "checkpoints")
    config = resolve_config("tiny", {"model": "dynconv_cifar_fast", "data_dir": str(fake_cifar_root)})
    from cifar10_recipe.data import load_cifar10
    from cifar10_recipe.model_setup import build_model, whiten_stem

    model = build_model(config, torch.device("cpu"))
    whiten_stem(model, load_cifar10(str(fake_cifar_root)).subset(128).train_images, config.normalization)
    torch.testing.assert_close(weights["stem.conv.weight"], model.stem.conv.weight.detach().contiguous())
    assert not torch.equal(weights["stem.conv.bias"], model.stem.conv.bias.detach())


# ------------------------------------------------------------------------------------------------------------------
#  Test-time augmentation
# ------------------------------------------------------------------------------------------------------------------


class _PixelLinear(nn.Module):
    """A model linear in every pixel, with no symmetry, so each augmentation gives different logits."""

    def __init__(self, channels: int, height: int, width: int, classes: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, channels * height * width))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


def _reflect(index: int, size: int) -> int:
    return -index if index < 0 else 2 * (size - 1) - index if index >= size else index


def _translated(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., i, j] = images[..., reflect(i + dy), reflect(j + dx)], pixel by pixel."""
    height, width = images.shape[-2:]
    out = torch.empty_like(images)
    for i in range(height):
        for j in range(width):
            out[..., i, j] = images[..., _reflect(i + dy, height), _reflect(j + dx, width)]
    return out


@pytest.mark.parametrize("tta", [0, 1, 2])
def test_tta_levels_average_the_documented_views(tta):
    torch.manual_seed(tta)
    images = torch.randn(4, 3, 6, 7)
    model = _PixelLinear(3, 6, 7)
    with torch.no_grad():
        plain = model(images)
        mirrored = 0.5 * (plain + model(images.flip(3)))
        views = [_translated(images, -1, -1), _translated(images, 1, 1)]
        translated = sum(0.5 * (model(v) + model(v.flip(3))) for v in views) / 2
        expected = {0: plain, 1: mirrored, 2: 0.5 * mirrored + 0.5 * translated}[tta]
        torch.testing.assert_close(tta_logits(model, images, tta, plain), expected)


# ------------------------------------------------------------------------------------------------------------------
#  Learning-rate schedules
# ------------------------------------------------------------------------------------------------------------------


def test_linear_schedule_warms_up_then_decays_to_zero():
    config = resolve_config("tiny", {"epochs": 4, "warmup_epochs": 1.0})
    factor = lr_factor(config, steps_per_epoch=10)     # 40 steps, 10 of warm-up
    assert [factor(s) for s in (0, 4, 9)] == [pytest.approx(0.1), pytest.approx(0.5), pytest.approx(1.0)]
    assert [factor(s) for s in (10, 25, 40)] == [pytest.approx(1.0), pytest.approx(0.5), pytest.approx(0.0)]
    assert factor(45) == 0.0


def test_cosine_schedule_follows_half_a_cosine_after_warm_up():
    config = resolve_config("tiny", {"epochs": 3, "warmup_epochs": 0.5, "schedule": "cosine"})
    factor = lr_factor(config, steps_per_epoch=20)     # 60 steps, 10 of warm-up, 50 of cosine
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    for step in (10, 20, 35, 47, 60):
        assert factor(step) == pytest.approx((1 + math.cos(math.pi * (step - 10) / 50)) / 2)


def test_step_schedule_is_torch_steplr_stepped_per_epoch():
    config = resolve_config("coursework", {"epochs": 7, "step_size": 2, "gamma": 0.5})
    factor = lr_factor(config, steps_per_epoch=3)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for epoch in range(7):
        for step in range(3):
            assert factor(epoch * 3 + step) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()


# ------------------------------------------------------------------------------------------------------------------
#  Resume: with the weight average and temperature annealing, and with the torchvision loader
# ------------------------------------------------------------------------------------------------------------------


class _Interrupted(BaseException):
    pass


def _interrupt_after_the_first_checkpoint(monkeypatch):
    original = run_manager.save_checkpoint

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        raise _Interrupted

    monkeypatch.setattr(run_manager, "save_checkpoint", save_then_die)


@pytest.mark.parametrize("flags", [
    ["--block", "dyconv", "--temperature-start", "30", "--temperature-epochs", "1.5", "--ema-decay", "0.9"],
    ["--loader", "torchvision", "--workers", "0", "--cutout", "8", "--pad-mode", "zeros", "--flip", "random"],
    ["--model", "dynconv_cifar_fast", "--whiten", "--whiten-bias-epochs", "1", "--freeze-norm-weights",
     "--lookahead-every", "3", "--schedule", "triangle", "--lr-start-factor", "0.2", "--lr-end-factor", "0.07",
     "--subset", "256"],
], ids=["ema-and-temperature", "torchvision-loader", "airbench94-lookahead"])
@pytest.mark.slow  # three training runs each
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(flags, fake_cifar_root, tmp_path, monkeypatch):
    args = [*QUICK, *flags, "--epochs", "2", "--data-dir", str(fake_cifar_root)]
    assert train.main([*args, "--out", str(tmp_path / "whole")]) == 0
    with monkeypatch.context() as patch:
        _interrupt_after_the_first_checkpoint(patch)
        with pytest.raises(_Interrupted):
            train.main([*args, "--out", str(tmp_path / "interrupted")])
    assert len(_history(tmp_path / "interrupted")) == 1
    assert train.main(["--resume", str(tmp_path / "interrupted")]) == 0
    assert _history(tmp_path / "interrupted") == _history(tmp_path / "whole")


def test_the_best_weights_are_the_weight_average(fake_cifar_root, tmp_path):
    """With --ema-decay the evaluated and saved model is the average: best.safetensors differs from the trained
    weights of the same epoch, and evaluating it reproduces the recorded accuracy."""
    from cifar10_recipe.checkpoint import load_checkpoint, load_weights

    run_dir = tmp_path / "run"
    assert train.main([*QUICK, "--ema-decay", "0.9", "--epochs", "1", "--data-dir", str(fake_cifar_root), "--out",
                       str(run_dir)]) == 0
    trained, _ = load_checkpoint(run_dir / "checkpoints")
    averaged, _ = load_weights(run_dir / "checkpoints" / "best.safetensors")
    assert not torch.equal(trained["head.fc.weight"], averaged["head.fc.weight"])
    recorded = _history(run_dir)[-1]["test_acc"]
    assert run_setup.evaluate_checkpoint(run_dir / "checkpoints" / "best.safetensors",
                                           {"tta": 0})["test_acc"] == recorded


# ------------------------------------------------------------------------------------------------------------------
#  The configuration's metadata
# ------------------------------------------------------------------------------------------------------------------


def test_resumable_fields_are_those_that_do_not_change_the_computation():
    assert resumable_fields() == {"device", "threads", "workers", "progress", "out", "data_dir", "download",
                                  "save_every", "checkpoint_every", "keep_checkpoints", "on_nan", "reuse_memory"}


def test_model_arguments_are_the_model_fields_that_are_set():
    assert model_arguments(TrainConfig()) == {"num_classes": 10}
    config = TrainConfig(block="static", num_experts=1, drop_rate=0.1, num_classes=20)
    assert model_arguments(config) == {"block": "static", "num_experts": 1, "drop_rate": 0.1, "num_classes": 20}


def test_saved_configs_of_earlier_versions_are_upgraded():
    old = {"model": "dynconv_cifar", "num_convs": 4, "compile": True}
    assert upgrade_config_dict(old) == {"model": "dynconv_cifar", "num_experts": 4, "compile": "default",
                                        "normalization": "coursework"}
    assert upgrade_config_dict({"model": "dynconv_cifar_tiny", "compile": False})["normalization"] == "cifar10"
    assert resolve_config("coursework", {}).normalization == "coursework"


def test_model_kwargs_reach_the_model():
    """``--model-kwargs`` sets what has no flag of its own: here a dynamic block in the second position of each
    segment only, a routing temperature, branch kernel sizes (1, 3)."""
    from cifar10_recipe.model_setup import build_model

    config = resolve_config("tiny", {"model_kwargs": '{"num_experts": [[1, 2], [1, 2], [1, 2]], "temperature": 2.0}'})
    assert model_arguments(config) == {"num_classes": 10, "num_experts": [[1, 2], [1, 2], [1, 2]], "temperature": 2.0}
    model = build_model(config, torch.device("cpu"))
    assert model.cfg.block_num_experts == ((1, 2), (1, 2), (1, 2)) and model.cfg.temperature == 2.0
    config = resolve_config("tiny", {"model_kwargs": '{"kernel_size": [1, 3]}'})
    assert build_model(config, torch.device("cpu")).stages[0][0].kernel_sizes == (1, 3)


def test_routing_health_leaves_out_one_expert_routers():
    """A one-kernel DyConv routes to its only kernel: nothing to mix, so no entropy to report (it used to end the
    run at its first evaluation)."""
    from cifar10_recipe.report import routing_health

    mixed = torch.softmax(torch.randn(16, 2), dim=1)
    health = routing_health({"stages.0.0": torch.ones(16, 1), "stages.0.1": mixed, "stages.1.0": torch.ones(16, 1)})
    assert list(health) == ["stages.0"] and 0 < health["stages.0"]["entropy"] <= 1


def test_default_workers_follow_the_cpus_each_process_has(monkeypatch):
    import os

    from cifar10_recipe.loaders import MAX_DEFAULT_WORKERS, default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert default_workers() == 2 and default_workers(world_size=2) == 1 and default_workers(world_size=4) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert default_workers() == MAX_DEFAULT_WORKERS


def test_the_coursework_loader_starts_no_more_workers_than_cpus(fake_cifar_root, monkeypatch):
    import os
    import warnings

    from cifar10_recipe.data import load_cifar10
    from cifar10_recipe.loaders import build_loaders

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    config = resolve_config("coursework", {"data_dir": str(fake_cifar_root)})
    assert config.workers is None
    train, _ = build_loaders(config, load_cifar10(str(fake_cifar_root)), torch.device("cpu"))
    assert train.loader.num_workers == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a DataLoader asks for more workers than CPUs
        train.loader.check_worker_number_rationality()


def test_a_run_saved_before_a_field_existed_resumes_when_the_field_is_at_its_default(tmp_path):
    """A config.json written before a flag was added lacks its key; resuming must not call that a change, but a
    non-default value given on the command line still is one."""
    from cifar10_recipe.config import resolve_config

    saved = {"preset": "cpu", **resolve_config("cpu", {}).to_dict()}
    del saved["init_blend_epochs"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config, _, _, mode = run_setup.resolve_run("", {}, resume=str(tmp_path))
    assert mode == "resume" and config.init_blend_epochs == 0.0
    with pytest.raises(ValueError, match="init_blend_epochs"):
        run_setup.resolve_run("", {"init_blend_epochs": 1.0}, resume=str(tmp_path))
