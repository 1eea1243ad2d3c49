"""Export a model for deployment: ``torch.export`` programs and ONNX files with a dynamic batch axis.

Dynamic convolutions usually break here: a per-sample kernel run as a grouped convolution with ``groups = B`` bakes
the batch size into the graph. While exporting, the kernel-mixing layers therefore compute their per-sample
convolution in a form without a batch-sized group count (output mixing for CondConv and DyConv, a batched matmul
for ODConv; :func:`dynconv.layers.kernel_mixing.select_mode`), with identical results.

From the command line::

    python -m dynconv.export dynconv_cifar_tiny --out tiny.onnx --pretrained --reparameterize
"""
import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
from timm.utils import reparameterize_model
from torch import nn

__all__ = ["export_onnx", "export_program"]

# torch.export specialises a dimension whose example size is 0 or 1, so the example batch must be larger
_EXAMPLE_BATCH = 2
_MAX_BATCH = 4096


def _prepare(model: nn.Module, input_size: Optional[Sequence[int]], reparameterize: bool
             ) -> Tuple[nn.Module, Tuple[torch.Tensor], Tuple[Dict[int, Any]]]:
    """An eval-mode copy of ``model`` (the caller's model is left as it was, BatchNorms folded if asked), an example
    input, and the dynamic batch dimension both exporters take."""
    model = copy.deepcopy(model).eval()
    if reparameterize:
        reparameterize_model(model, inplace=True)
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if "input_size" not in cfg:
            raise ValueError(f"{type(model).__name__} has no pretrained_cfg['input_size']; pass input_size=(C, H, W)")
        input_size = cfg["input_size"]
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {tuple(input_size)!r}")
    parameter = next(model.parameters(), None)
    example = torch.randn(_EXAMPLE_BATCH, *input_size, device=None if parameter is None else parameter.device)
    return model, (example,), ({0: torch.export.Dim("batch", min=1, max=_MAX_BATCH)},)


def export_program(model: nn.Module, *, input_size: Optional[Sequence[int]] = None,
                   reparameterize: bool = False) -> torch.export.ExportedProgram:
    """``torch.export`` the eval-mode model with a dynamic batch dimension.

    Args:
        model: Any model; a copy is exported, the model itself is not changed.
        input_size: (C, H, W) of the input; default the model's ``pretrained_cfg["input_size"]``.
        reparameterize: Fold every BatchNorm that a block can fold (``timm.utils.reparameterize_model``) first.

    Returns:
        The exported program; ``program.module()(x)`` runs it for any batch size from 1 to 4096.

    Example:
        >>> model = timm.create_model("dynconv_cifar_tiny")
        >>> program = export_program(model)
        >>> program.module()(torch.randn(3, 3, 32, 32)).shape
        torch.Size([3, 10])
    """
    model, example, dynamic_shapes = _prepare(model, input_size, reparameterize)
    return torch.export.export(model, example, dynamic_shapes=dynamic_shapes)


def export_onnx(model: nn.Module, path: Union[str, Path], *, input_size: Optional[Sequence[int]] = None,
                reparameterize: bool = False, opset_version: int = 18) -> Path:
    """Write the eval-mode model to an ONNX file whose batch axis is dynamic.

    The file has one input ``images`` (batch, C, H, W) and one output ``logits`` (batch, num_classes); one file
    serves every batch size. Exported through ``torch.export`` (torch's dynamo-based ONNX exporter).

    Args:
        model: Any model; a copy is exported, the model itself is not changed.
        path: The ``.onnx`` file to write (its folder must exist).
        input_size: (C, H, W) of the input; default the model's ``pretrained_cfg["input_size"]``.
        reparameterize: Fold every BatchNorm that a block can fold first.
        opset_version: ONNX opset.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: the folder {path.parent} does not exist")
    model, example, dynamic_shapes = _prepare(model, input_size, reparameterize)
    program = torch.onnx.export(model, example, dynamic_shapes=dynamic_shapes, input_names=["images"],
                                output_names=["logits"], opset_version=opset_version, dynamo=True,
                                external_data=False, verbose=False)
    program.save(str(path))
    return path


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynconv.export", description="Export a registered model to ONNX "
                                     "with a dynamic batch axis.")
    parser.add_argument("model", help="registered model name, e.g. dynconv_cifar_tiny")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--pretrained", action="store_true", help="load the model's shipped weights")
    parser.add_argument("--reparameterize", action="store_true", help="fold BatchNorms into the convolutions")
    parser.add_argument("--num-classes", type=int, help="classifier size (default: the model's)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    args = parser.parse_args(argv)
    if not timm.is_model(args.model):
        print(f"error: unknown model {args.model!r}; see dynconv.models.list_models()", file=sys.stderr)
        return 2
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    try:
        model = timm.create_model(args.model, pretrained=args.pretrained, **kwargs)
        path = export_onnx(model, args.out, reparameterize=args.reparameterize, opset_version=args.opset)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, dynamic batch axis)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
