"""``softgrad export``: a trained run's weights out as a file torch or onnxruntime loads, and a torch MLP in.

    softgrad export runs/mnist-mlp-numpy-... --to model.safetensors   # torch.nn.Sequential's state dict
    softgrad export runs/mnist-mlp-numpy-... --to model.onnx          # an ONNX graph
    softgrad export --from model.safetensors --to runs/imported       # a run folder evaluate and predict accept

Out: ``RUN`` is a run folder or a ``checkpoint.npz``; the format follows ``--to``'s suffix. The file takes
what ``softgrad predict`` takes, the raw samples (0..255 pixels for the image sets, flattened), with the
data's input scaling folded into the first layer and a regressor's target scale into the last. An existing
file is replaced only with ``--overwrite``.

In: ``--from`` a ``.safetensors`` file (softgrad's export restores the run as trained, its data and
scaling too; another torch MLP's state dict needs ``--activation`` unless its metadata names one) or a
``.pt``/``.pth`` state dict (read with ``torch.load(weights_only=True)``). ``--to`` is a new run folder
(its ``checkpoint.npz`` is written) or a ``.npz`` file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from softgrad.commands.cli import OneLineErrorParser, run_main

PROG = "softgrad export"
PIP_TORCH = "pip install 'softgrad[torch]'  (or: pip install torch)"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=PROG, description="Export a trained run's weights as a .safetensors file (the "
                           "state dict of torch.nn.Sequential(Linear, act, ..., Linear), or for a ConvNet of "
                           "Sequential(Conv2d, ReLU, MaxPool2d, ..., Flatten, Linear)) or an .onnx file, taking raw "
                           "samples as softgrad predict does; or, with --from, import a torch MLP as a run.")
    p.add_argument("run", metavar="RUN", nargs="?", help="a run folder (from softgrad train) or a checkpoint.npz")
    p.add_argument("--to", required=True, metavar="FILE", help="the file to write: model.safetensors or "
                   "model.onnx (the suffix chooses the format); with --from, a new run folder or a .npz file")
    p.add_argument("--from", dest="source", metavar="FILE", help="import this torch MLP instead: a .safetensors "
                   "file or a .pt/.pth state dict (a ConvNet: the .safetensors file softgrad export wrote)")
    p.add_argument("--overwrite", action="store_true", help="replace --to where it is an existing file")
    p.add_argument("--dataset", help="the data set, for a checkpoint too old to record it")
    p.add_argument("--root", help="folder of the full data sets (default: the run's)")
    imported = p.add_argument_group("with --from, what the file may not say")
    imported.add_argument("--activation", choices=["relu", "tanh", "sigmoid", "leaky_relu"],
                          help="the hidden activation (default: the file's metadata)")
    imported.add_argument("--head", choices=["softmax", "sigmoid", "identity"], help="softmax: a classifier "
                          "(default for 2+ outputs); sigmoid: a binary classifier's one logit; identity: a regressor")
    return p


def export_run(args: argparse.Namespace) -> int:
    from softgrad.commands.evaluate import _data_and_record, _run_files
    from softgrad.training import checkpoint
    from softgrad.training.exporting import SUFFIXES, check_output, export

    target = Path(args.to)
    if target.suffix.lower() not in SUFFIXES:
        raise ValueError(f"--to {target}: the format is chosen by the suffix, {' or '.join(SUFFIXES)}")
    check_output(target, args.overwrite, "pass --overwrite")
    path, saved = _run_files(Path(args.run))
    model = checkpoint.load(path)[0]
    lookup = argparse.Namespace(dataset=args.dataset, root=args.root, predict=True)
    _, record = _data_and_record(lookup, path, saved, model)
    export(model, target, data=record, overwrite=args.overwrite)
    print(f"wrote {target}: {_summary(target)}")
    return 0


def _summary(target: Path) -> str:
    """What a user needs to run the file: the module it is, the input it takes, what it gives."""
    if target.suffix.lower() != ".safetensors":
        return "an ONNX graph taking raw samples (see its metadata)"
    from softgrad.training.safetensors_io import read_header

    meta = read_header(target).metadata
    return f"{meta['architecture']}; input: {meta['input']}; output: {meta['output']}"


def import_network(args: argparse.Namespace) -> int:
    from softgrad.commands.run_folder import RUN_FILES
    from softgrad.numerics.optim.sgd import SGDState
    from softgrad.training import checkpoint
    from softgrad.training.exporting import check_output
    from softgrad.training.torch_import import from_torch

    source, target = Path(args.source), Path(args.to)
    if target.suffix.lower() in (".safetensors", ".onnx"):
        raise ValueError(f"--to {target}: with --from, --to is the run to write (a new folder or a .npz file); "
                         "export a run with softgrad export RUN --to FILE")
    if not source.is_file():
        raise FileNotFoundError(f"--from {source}: no such file")
    if target.suffix.lower() == ".npz":
        out = target
        check_output(out, args.overwrite, "pass --overwrite")
    else:
        if os.path.lexists(target) and not target.is_dir():
            raise FileExistsError(f"--to {target} is a file: give a new folder, or a .npz path")
        found = [name for name in RUN_FILES if os.path.lexists(target / name)]
        if found:
            raise FileExistsError(f"--to {target} holds {', '.join(found)} of a run: give a new folder (an import "
                                  "never replaces a run's files)")
        out = target / "checkpoint.npz"
        check_output(out, False, "give a new folder")
    network = _state_dict(source) if source.suffix.lower() in (".pt", ".pth") else source
    model = from_torch(network, activation=args.activation, head=args.head)
    settings = {"imported_from": str(source.resolve()), "loss": model.loss}
    checkpoint.save(out, model, SGDState(step=0, momentum_buffers=None), [], settings, data=model.trained_on)
    print(f"wrote {out}: {model} from {source}; predict with softgrad predict {target} FILE.npy")
    return 0


def _state_dict(path: Path) -> dict:
    """A ``.pt`` state dict, read with ``torch.load(weights_only=True)``: tensors only, no pickled code run."""
    try:
        import torch
    except ImportError:
        raise ValueError(f"--from {path}: reading .pt files needs torch, which is not installed: {PIP_TORCH}; "
                         "or save the state dict with safetensors.torch.save_file") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's errors for files that are not (safe) state dicts
        raise ValueError(f"--from {path}: not a state dict torch.load(weights_only=True) reads "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise ValueError(f"--from {path}: holds a {type(state).__name__}, not a state dict")
    return state


def run(args: argparse.Namespace) -> int:
    if args.source is not None:
        if args.run is not None:
            raise ValueError(f"give RUN ({args.run}) to export a run, or --from FILE to import one; not both")
        return import_network(args)
    if args.run is None:
        raise ValueError("give RUN, a run folder or checkpoint.npz to export, or --from FILE to import a torch MLP")
    if args.activation is not None or args.head is not None:
        raise ValueError("--activation and --head describe an imported network: use them with --from")
    return export_run(args)


def main(argv: list[str] | None = None) -> int:
    """``softgrad export``'s exit status: 0; 2 for bad input, 1 for a bug, each with one line."""
    return run_main(PROG, lambda args: run(build_parser().parse_args(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
