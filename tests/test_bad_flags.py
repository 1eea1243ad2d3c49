"""Every mistake a user can make on train.py's command line ends in one message naming the flag and the value, exit
status 2, and nothing written to disk. Found by trying each flag with wrong values, as a new user would."""
import json
import urllib.error

import pytest
import timm

from cifar10_recipe import cli as train
from cifar10_recipe.checkpoint import save_weights
from cifar10_recipe.config import resolve_config

QUICK = ["--preset", "tiny", "--subset", "256", "--test-subset", "128", "--epochs", "1"]

# (flags, words the message must hold); every row must fail before the run folder exists
BAD_NEW_RUNS = [
    (["--epochs", "0"], ["--epochs must be >= 1, got 0"]),
    (["--batch-size", "-4"], ["--batch-size must be >= 1, got -4"]),
    (["--runs", "0"], ["--runs must be >= 1"]),
    (["--eval-every", "0"], ["--eval-every must be >= 1"]),
    (["--subset", "-1"], ["--subset must be >= 0"]),
    (["--threads", "-2"], ["--threads must be >= 0"]),
    (["--lr", "0"], ["--lr must be > 0, got 0"]),
    (["--lr", "inf"], ["--lr must be a finite number"]),
    (["--lr", "nan"], ["--lr must be a finite number"]),
    (["--gamma", "0"], ["--gamma must be > 0"]),
    (["--bias-lr-scale", "-1"], ["--bias-lr-scale must be > 0"]),
    (["--momentum", "1.5"], ["--momentum must be in [0, 1), got 1.5"]),
    (["--weight-decay=-1e-4"], ["--weight-decay must be >= 0"]),
    (["--label-smoothing", "1"], ["--label-smoothing must be in [0, 1)"]),
    (["--ema-decay", "1"], ["--ema-decay must be in [0, 1)"]),
    (["--drop-rate", "1"], ["--drop-rate must be in [0, 1)"]),
    (["--temperature-start", "-1"], ["--temperature-start must be >= 0"]),
    (["--temperature-epochs", "0"], ["--temperature-epochs must be > 0"]),
    (["--tta", "3"], ["--tta must be 0, 1 or 2, got 3"]),
    (["--warmup-epochs", "20"], ["--warmup-epochs must be in [0, epochs=1], got 20"]),
    (["--crop-padding", "40"], ["--crop-padding must be < 32", "40"]),
    (["--cutout", "64"], ["--cutout <= 32", "64"]),
    (["--num-classes", "0"], ["--num-classes must be >= 1, got 0"]),
    (["--num-classes", "5"], ["--num-classes 5 is fewer than the 10 classes"]),
    (["--num-experts", "0"], ["--num-experts must be >= 1, got 0"]),
    (["--subset", "999999"], ["--subset 999999 asks for more images than the"]),
    (["--test-subset", "999999"], ["--test-subset 999999 asks for more images than the"]),
    (["--device", "cuda:99"], ["--device cuda:99"]),
    (["--device", "gpu0"], ["--device 'gpu0' is not a device"]),
    (["--device", "meta"], ["--device meta: the recipe runs on cpu or cuda"]),
    (["--preset", "turbo"], ["--preset must be one of", "'turbo'"]),
    (["--model", "no_such_model"], ["--model 'no_such_model' is not a registered model", "dynconv_cifar_tiny"]),
    (["--block", "dense"], ["block", "dense"]),
    (["--model", "resnet18", "--block", "static"], ["--model resnet18 cannot be built", "block"]),
    (["--whiten"], ["--whiten needs a model with a patch stem"]),
    (["--loader", "torchvision"], ["--loader torchvision supports --pad-mode zeros", "--flip alternate"]),
    (["--model-kwargs", "[2]"], ["--model-kwargs must be a JSON object", "[2]"]),
    (["--model-kwargs", "{num_experts: 2}"], ["--model-kwargs must be a JSON object"]),
    (["--block", "static", "--model-kwargs", '{"block": "odconv"}'], ["--model-kwargs sets ['block']"]),
    (["--model-kwargs", '{"num_experts": [2, 2]}'], ["one entry per segment", "'num_experts': 2"]),
    (["--model-kwargs", '{"widths": [32, -1, 8]}'], ["widths entries must be a positive integer", "-1"]),
    (["--model-kwargs", '{"wingspan": 3}'], ["--model dynconv_cifar_tiny cannot be built", "wingspan"]),
    (["--lookahead-every", "-1"], ["--lookahead-every must be >= 0"]),
    (["--lookahead-decay", "1"], ["--lookahead-decay must be in [0, 1)"]),
    (["--whiten-bias-epochs", "2"], ["--whiten-bias-epochs 2 needs --whiten"]),
    (["--lr-end-factor=-0.1"], ["--lr-end-factor must be >= 0"]),
    (["--temperature-start", "nan"], ["--temperature-start must be a finite number"]),
    (["--checkpoint-every", "often"], ["--checkpoint-every must be a number of steps", "'often'"]),
    (["--checkpoint-every=-5m"], ["--checkpoint-every must be a number of steps", "'-5m'"]),
    (["--keep-checkpoints", "0"], ["--keep-checkpoints must be >= 1, got 0"]),
]


def _run_and_capture(argv, capsys):
    """train.main's exit status and stderr; argparse's own errors (wrong types, unknown choices) exit through
    SystemExit with its one-line usage error."""
    try:
        code = train.main(argv)
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


def _assert_one_clear_message(code, error, words):
    assert code == 2, error
    assert "Traceback" not in error, error
    assert sum(line.startswith("error:") or ": error:" in line for line in error.splitlines()) == 1, error
    for word in words:
        assert word in error, f"{word!r} not in {error!r}"


@pytest.mark.parametrize("flags,words", BAD_NEW_RUNS, ids=[" ".join(flags) for flags, _ in BAD_NEW_RUNS])
def test_a_bad_flag_is_one_message_and_writes_nothing(flags, words, fake_cifar_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, error = _run_and_capture([*QUICK, "--data-dir", str(fake_cifar_root), *flags, "--out", str(run_dir)],
                                   capsys)
    _assert_one_clear_message(code, error, words)
    assert not run_dir.exists()


@pytest.mark.parametrize("flags,words", [
    (["--epochs", "ten"], ["--epochs", "invalid int value: 'ten'"]),
    (["--pad-mode", "circular"], ["--pad-mode", "invalid choice: 'circular'"]),
    (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
    (["--resume", "a", "--eval", "b"], ["--eval", "not allowed with argument --resume"]),
])
def test_malformed_command_lines_are_argparse_usage_errors(flags, words, fake_cifar_root, tmp_path, capsys):
    code, error = _run_and_capture([*flags, "--data-dir", str(fake_cifar_root), "--out", str(tmp_path / "run")],
                                   capsys)
    _assert_one_clear_message(code, error, words)
    assert not (tmp_path / "run").exists()


def test_offline_download_is_one_message(tmp_path, capsys, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    code, error = _run_and_capture([*QUICK, "--data-dir", str(tmp_path / "data"), "--download", "--out",
                                    str(tmp_path / "run")], capsys)
    _assert_one_clear_message(code, error, ["--download could not fetch CIFAR-10", "name resolution", "--data-dir"])
    assert not (tmp_path / "run").exists()


def _run_folder(tmp_path, text):
    run_dir = tmp_path / "saved"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(text)
    return run_dir


@pytest.mark.parametrize("text,words", [
    ("{not json", ["config.json is not a readable configuration", "Expecting property name"]),
    ("[1, 2]", ["config.json is not a configuration: expected a JSON object, got list"]),
    (json.dumps({"preset": "tiny", "epochs": "ten"}), ["--epochs must be int, got 'ten' (str)"]),
    (json.dumps({"preset": "tiny", "lr": True}), ["--lr must be float, got True (bool)"]),
    (json.dumps({"preset": "tiny", "epochs": 3, "speed": "max"}), ["unknown configuration keys ['speed']"]),
])
def test_a_malformed_saved_config_is_one_message(text, words, tmp_path, capsys):
    run_dir = _run_folder(tmp_path, text)
    code, error = _run_and_capture(["--resume", str(run_dir)], capsys)
    _assert_one_clear_message(code, error, words)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]


def test_resume_of_a_folder_that_is_not_a_run_is_one_message(tmp_path, capsys):
    code, error = _run_and_capture(["--resume", str(tmp_path)], capsys)
    _assert_one_clear_message(code, error, ["no config.json there"])


def test_evaluating_a_checkpoint_of_another_model_is_one_message(fake_cifar_root, tmp_path, capsys):
    """Weights of the static twin under a config that names the dynamic model: load_state_dict would raise a
    RuntimeError listing hundreds of keys."""
    config = resolve_config("tiny", {"data_dir": str(fake_cifar_root)})
    path = tmp_path / "foreign.safetensors"
    save_weights(path, timm.create_model("dynconv_cifar_tiny_static"), config.to_dict(), epoch=0)
    code, error = _run_and_capture(["--eval", str(path)], capsys)
    _assert_one_clear_message(code, error, [str(path), "does not hold weights of dynconv_cifar_tiny"])
    code, error = _run_and_capture(["--eval", str(tmp_path / "missing.safetensors")], capsys)
    _assert_one_clear_message(code, error, ["missing.safetensors does not exist"])
