"""Ship a finished run's final weights as the package's pretrained weights for a registered model.

    python -m tools.ship_weights runs/equal-budget/branch-e11-s0 --model dynconv_cifar_tiny \\
        --record examples/cifar10/records/cpu-equal-budget/branch-e11-s0

Writes ``dynconv/pretrained/<model>.<tag>.safetensors`` (float32, or float16 with ``--half`` to halve the file; the
accuracy and the check are then computed with the float16 values, as the package will load them) whose metadata
states the test accuracy on the local copy (as recorded by the run, and recomputed here in float32), the fixed-part
count that CI checks (``cifar10_recipe.shipping``), the recipe, the command, the commit and the record it comes from.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import timm
from safetensors.torch import save_file

import dynconv
from cifar10_recipe.checkpoint import MANIFEST, load_weights
from cifar10_recipe.config import NORMALIZATIONS, upgrade_config_dict
from cifar10_recipe.data import load_cifar10
from cifar10_recipe.shipping import CHECK_STRIDE, check_part, count_correct

PRETRAINED_DIR = Path(dynconv.__file__).resolve().parent / "pretrained"
DEFAULT_TAG = "cpu_cifar10local"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished run folder (config.json, summary.json, checkpoints/)")
    parser.add_argument("--model", required=True, help="the registered model the weights are for")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"pretrained tag (default {DEFAULT_TAG})")
    parser.add_argument("--record", type=Path, required=True, help="the committed record folder of this run")
    parser.add_argument("--data-dir", help="CIFAR-10 root (default: $CIFAR10_ROOT, else ./data)")
    parser.add_argument("--out-dir", type=Path, default=PRETRAINED_DIR, help="where to write (default: the package)")
    parser.add_argument("--half", action="store_true", help="store the floating-point tensors in float16")
    args = parser.parse_args(argv)

    summary = json.loads((args.run_dir / "summary.json").read_text())
    config = json.loads((args.run_dir / "config.json").read_text())
    manifest = json.loads((args.run_dir / "checkpoints" / MANIFEST).read_text())
    if manifest["epoch"] + 1 != config["epochs"]:
        raise SystemExit(f"{args.run_dir} stopped after epoch {manifest['epoch'] + 1} of {config['epochs']}")
    weights, _ = load_weights(args.run_dir / "checkpoints" / manifest["weights"])
    model = timm.create_model(args.model, num_classes=config["num_classes"])
    if args.half:  # evaluate what will ship: the float16 values, loaded back into the float32 model
        weights = {k: v.half().float() if v.is_floating_point() else v for k, v in weights.items()}
    model.load_state_dict(weights)  # strict: the run must have trained exactly this architecture
    mean, std = NORMALIZATIONS[upgrade_config_dict(config)["normalization"]]
    if (tuple(mean), tuple(std)) != (tuple(model.pretrained_cfg["mean"]), tuple(model.pretrained_cfg["std"])):
        raise SystemExit(f"{args.run_dir} normalised its inputs with mean {mean}, std {std}; register the tag's cfg "
                         f"with those (the default cfg of {args.model} has {model.pretrained_cfg['mean']})")

    data = load_cifar10(args.data_dir)
    full_correct = count_correct(model, data.test_images, data.test_labels)
    part_images, part_labels = check_part(data.test_images, data.test_labels)
    part_correct = count_correct(model, part_images, part_labels)
    provenance = summary["provenance"]
    metadata = {
        "model": args.model, "tag": args.tag, "data": "local CIFAR-10 copy (see the recipe's README)",
        "recipe": {"preset": config.get("preset"), **{k: v for k, v in config.items() if k != "preset"}},
        "command": provenance["command"], "commit": provenance["commit"], "record": str(args.record),
        "machine": provenance["machine"], "versions": provenance["versions"],
        "test_acc_recorded": summary["test_acc"], "test_acc_tta_recorded": summary["test_acc_tta"],
        "test_acc_fp32": full_correct / len(data.test_labels), "stored_as": "float16" if args.half else "float32",
        "check": {"part": f"test images [::{CHECK_STRIDE}]", "images": len(part_labels), "correct": part_correct,
                  "precision": "float32, eval mode, no test-time augmentation"},
    }
    out = args.out_dir / f"{args.model}.{args.tag}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {name: (tensor.half() if args.half and tensor.is_floating_point() else tensor).contiguous()
             for name, tensor in model.state_dict().items()}
    save_file(state, str(out), metadata={key: json.dumps(value) for key, value in metadata.items()})
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, test accuracy (float32) {100 * metadata['test_acc_fp32']:.2f}%, "
          f"check part {part_correct}/{len(part_labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
