"""`modelpilot compress quantize|publish`: the steps of a compression Job that run in the operator image.

``quantize`` writes the INT8 model and exits 1 when the accuracy gate fails, so the Job
fails and nothing is published. ``publish`` copies the result into the model repository
as a new version directory and never overwrites an existing version: versions are
immutable, a running revision may be serving it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from modelpilot.serving.triton import model_repository_path

REPORT_NAME = "modelpilot-compress.json"


def _local(uri: str, pvc_mount: str, workdir: Path) -> Path:
    """A local path for a pvc://, absolute or remote (s3://, gs://) file; remote ones are downloaded."""
    path = model_repository_path(uri, mount_path=pvc_mount)
    if "://" not in path:
        return Path(path)
    import fsspec  # only remote stores need it

    target = workdir / Path(path).name
    with fsspec.open(path, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


def cmd_quantize(args: argparse.Namespace) -> int:
    import numpy as np

    from modelpilot.compress.accuracy import AccuracyThresholds, accuracy_gate, random_inputs
    from modelpilot.compress.quantize import quantize_onnx

    result = quantize_onnx(args.source, args.target, per_channel=args.per_channel)
    with tempfile.TemporaryDirectory() as tmp:
        labels = None
        if args.validation:
            data = np.load(_local(args.validation, args.pvc_mount, Path(tmp)))
            labels = data["labels"] if "labels" in data.files else None
            inputs = {k: data[k] for k in data.files if k != "labels"}
        else:
            inputs = random_inputs(args.source, args.random_samples)
        if labels is None and args.max_abs_diff is None:
            print("without labels the gate can only compare outputs: pass --max-abs-diff", file=sys.stderr)
            return 2
        thresholds = AccuracyThresholds(
            args.max_accuracy_drop if labels is not None else None, args.max_abs_diff
        )
        report = accuracy_gate(args.source, args.target, inputs, labels, thresholds, output=args.output)
    summary = {
        "method": "onnx-int8",
        "bytesBefore": result.bytes_before,
        "bytesAfter": result.bytes_after,
        "gate": report.as_dict(),
    }
    Path(args.target).with_name(REPORT_NAME).write_text(json.dumps(summary, indent=2, default=list))
    print(json.dumps(summary, default=list))
    if not report.passed:
        print(f"accuracy gate failed: {report.reason}", file=sys.stderr)
        return 1
    return 0


def publish_version(
    source: Path, repository: str, model: str, version: int, *, pvc_mount: str, overwrite: bool = False
) -> str:
    """Copy ``source``'s files into ``<repository>/<model>/<version>/``; returns where."""
    if version < 1:
        raise ValueError("Triton versions are positive integers")
    base = model_repository_path(repository, mount_path=pvc_mount).rstrip("/")
    target = f"{base}/{model}/{version}"
    files = [p for p in sorted(source.rglob("*")) if p.is_file()]
    if not files:
        raise FileNotFoundError(f"nothing to publish in {source}")
    if "://" in target:
        import fsspec

        fs, root = fsspec.core.url_to_fs(target)
        if fs.exists(root) and not overwrite:
            raise FileExistsError(f"version {version} of {model} already exists at {target}")
        for path in files:
            fs.put_file(str(path), f"{root}/{path.relative_to(source).as_posix()}")
        return target
    dest = Path(target)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"version {version} of {model} already exists at {target}")
    staging = dest.with_name(f".{version}.partial")  # a half-copied version must never look loadable
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return target


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        where = publish_version(
            Path(args.source),
            args.repository,
            args.model,
            args.version,
            pvc_mount=args.pvc_mount,
            overwrite=args.overwrite,
        )
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    print(f"published {args.model} version {args.version} to {where}")
    return 0


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``compress`` command's parser; pass an existing (sub)parser to mount it under `modelpilot`."""
    parser = parser or argparse.ArgumentParser(prog="modelpilot compress", description=__doc__)
    sub = parser.add_subparsers(dest="compress_command", required=True)
    q = sub.add_parser("quantize", help="ONNX dynamic INT8 quantization with an accuracy gate")
    q.add_argument("--source", required=True, help="the original model.onnx")
    q.add_argument("--target", required=True, help="where the quantized model.onnx goes")
    q.add_argument(
        "--validation",
        help="an .npz of input arrays named like the model's inputs, plus optional 'labels'; "
        "a local path, pvc://claim/path or s3:// / gs:// URI",
    )
    q.add_argument("--max-accuracy-drop", type=float, default=0.01)
    q.add_argument("--max-abs-diff", type=float, default=None)
    q.add_argument(
        "--random-samples",
        type=int,
        default=256,
        help="without --validation: random inputs to compare outputs on",
    )
    q.add_argument("--output", help="the output tensor to compare (default: the first)")
    q.add_argument("--per-channel", action="store_true")
    q.add_argument("--pvc-mount", default="/mnt/model-store")
    q.set_defaults(func=cmd_quantize)
    p = sub.add_parser("publish", help="copy a directory into the model repository as a new version")
    p.add_argument("--source", required=True)
    p.add_argument("--repository", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--pvc-mount", default="/mnt/model-store")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
