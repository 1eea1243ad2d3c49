"""examples/cifar10/equal_budget_study.py: the equal-time epoch counts, the plan, the levers' flags and how train.py
flags reach the runs."""
import json

import pytest
import timm
import torch

import dynconv  # noqa: F401  (registers the models)
from cifar10_recipe import equal_budget_study as study


def _timing_record(records, variant, train_s_subset, eval_s):
    """A timing run's last two epochs as the study reads them: epoch 2 trains ``train_s_subset`` seconds on the
    subset and evaluates for ``eval_s``."""
    folder = records / f"timing-{variant}"
    folder.mkdir(parents=True)
    rows = [{"epoch": 0, "elapsed_s": 100.0, "train_s": 50.0},
            {"epoch": 1, "elapsed_s": 100.0 + train_s_subset + eval_s, "train_s": train_s_subset}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_seconds_per_epoch_scale_the_subset_to_the_training_set(tmp_path):
    _timing_record(tmp_path, "branch", train_s_subset=40.0, eval_s=3.0)
    per_epoch = study.seconds_per_epoch(tmp_path)
    assert per_epoch == {"branch": pytest.approx(40.0 * study.TRAIN_IMAGES / study.TIMING_SUBSET + 3.0)}


def test_each_family_gets_the_most_epochs_that_fit_the_budget():
    per_epoch = {"branch": 200.0, "static": 85.0, "odconv": 330.0, "huge": 5000.0}
    epochs = study.equal_time_epochs(per_epoch)
    # the budget is branch's 11 epochs (2200 s): 25.9 -> 25, 6.7 -> 6, and never fewer than one epoch
    assert epochs == {"branch": 11, "static": 25, "odconv": 6, "huge": 1}


def test_the_plan_needs_every_family_timed_and_skips_untimed_levers(tmp_path):
    for family in study.FAMILIES[:-1]:
        _timing_record(tmp_path, family, 10.0, 1.0)
    with pytest.raises(SystemExit, match="odconv"):
        study.planned_runs(tmp_path)
    _timing_record(tmp_path, study.FAMILIES[-1], 10.0, 1.0)
    names = [name for name, *_ in study.planned_runs(tmp_path)]
    assert names[:2] == ["static-e11-s0", "branch-e11-s0"] and len(names) == len(set(names))
    assert not any(name.startswith(tuple(study.LEVERS)) for name in names)


def _lever_model(lever):
    """The model a lever's train.py flags build: its family's --block and its --model-kwargs on the tiny backbone."""
    flags = study.variant_flags(lever)
    return flags[1], timm.create_model("dynconv_cifar_tiny", block=flags[1],
                                       **json.loads(flags[flags.index("--model-kwargs") + 1]))


@pytest.mark.parametrize("lever", sorted(study.LEVERS))
def test_every_lever_builds_its_model(lever):
    family, model = _lever_model(lever)
    assert family == study.LEVERS[lever][0]
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_classes)


def test_train_flags_after_the_separator_reach_every_run(tmp_path, monkeypatch):
    for family in study.FAMILIES:
        _timing_record(tmp_path, family, 10.0, 1.0)
    commands = []
    monkeypatch.setattr(study, "run_and_record", lambda name, command, run_dir, records: commands.append(command))
    study.main(["train", "--records", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), "--only",
                "static-e11-s0", "branch-e11-s1", "--", "--threads", "1"])
    assert [c[c.index("--block") + 1] for c in commands] == ["static", "branch"]
    assert all(c[-2:] == ["--threads", "1"] and c[c.index("--preset") + 1] == "tiny" for c in commands)


def test_the_routed_lever_is_the_registered_routed_model():
    """The weights of the lever's run ship as dynconv_cifar_tiny_routed: both must be one network, weight for
    weight (ship_weights.py loads strictly), with the same blocks in the same places."""
    _, lever = _lever_model("branch_routed")
    registered = timm.create_model("dynconv_cifar_tiny_routed")
    assert {k: v.shape for k, v in lever.state_dict().items()} == \
        {k: v.shape for k, v in registered.state_dict().items()}
    assert [type(m).__name__ for m in lever.modules()] == [type(m).__name__ for m in registered.modules()]
    assert sum(type(m).__name__ == "DynamicBlock" for m in registered.modules()) == 2
