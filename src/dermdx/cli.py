"""The ``dermdx`` command: a thin layer over the library.

    dermdx train CONFIG.yaml [--set section.key=value ...]
    dermdx evaluate --model M (--config CONFIG.yaml | --data PATH [--format F]) --out DIR
    dermdx predict IMAGES_OR_DIRS... [--model M] --out preds.csv [--format isic2018] [--backend onnx]
    dermdx export --model M --format onnx --out model.onnx [--parity IMAGES_OR_DIRS ...] [--tolerance 1e-3]
    dermdx data check PATH [--format F]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dermdx.inference import DISCLAIMER, OUTPUT_FORMATS

DEFAULT_MODEL_DIR = Path(__file__).parent / "weights"


def default_model_path() -> Path:
    """The model that ships with dermdx, or a clear error while none does."""
    path = DEFAULT_MODEL_DIR / "default.safetensors"
    if not path.is_file():
        raise FileNotFoundError("no default model ships with this dermdx yet: pass --model PATH (a model.safetensors written by dermdx train)")
    return path


def _cmd_train(args: argparse.Namespace) -> int:
    from dermdx.config import load_config
    from dermdx.evaluation import evaluate
    from dermdx.inference import Predictor
    from dermdx.training import MODEL_FILE, fit

    config = load_config(args.config, args.set)
    summary = fit(config, resume=not args.no_resume)
    data = summary["data"]
    out = Path(config.output_dir)
    predictor = Predictor.from_checkpoint(out / MODEL_FILE, num_workers=config.train.num_workers, batch_size=64)
    metrics = evaluate(
        predictor, data.manifest.subset(data.test_idx), out / "eval", n_bootstrap=args.bootstrap,
        title=f"dermdx held-out evaluation: {config.output_dir}", extra={"split": f"{config.split.kind} fold {config.split.fold} {config.split.centre or ''}".strip()},
    )
    overall = metrics["overall"]
    print(f"model: {out / MODEL_FILE}")
    print(f"held-out ({overall['n']} images) balanced accuracy {overall['balanced_accuracy']:.4f}, report {out / 'eval' / 'report.html'}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dermdx.config import DataConfig, load_config
    from dermdx.data.adapters import load_manifest
    from dermdx.data.splits import train_val_indices
    from dermdx.evaluation import evaluate
    from dermdx.inference import Predictor

    predictor = Predictor.from_checkpoint(args.model or default_model_path(), batch_size=args.batch_size, num_workers=args.workers, tta=args.tta)
    if args.config:
        config = load_config(args.config, args.set)
        manifest = load_manifest(config.data)
        _, held_out = train_val_indices(manifest, config.split)
        manifest = manifest.subset(held_out)
    elif args.data:
        manifest = load_manifest(DataConfig(format=args.format, path=args.data, image_root=args.image_root))
    else:
        raise ValueError("evaluate needs --config CONFIG.yaml (its held-out split) or --data PATH")
    metrics = evaluate(predictor, manifest, args.out, n_bootstrap=args.bootstrap)
    overall = metrics["overall"]
    print(f"{overall['n']} images: balanced accuracy {overall['balanced_accuracy']:.4f}; report {Path(args.out) / 'report.html'}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from dermdx.data.adapters import read_images
    from dermdx.data.meta import attach_metadata
    from dermdx.inference import Predictor, predictions_frame

    manifest = read_images(args.images)
    if args.backend == "onnx":
        if not args.model or Path(args.model).suffix != ".onnx":
            raise ValueError(f"--backend onnx needs --model FILE.onnx (write one with dermdx export --format onnx), got --model {args.model}")
        predictor = Predictor.from_onnx(args.model, batch_size=args.batch_size, num_workers=args.workers, tta=args.tta)
    else:
        if args.model and Path(args.model).suffix == ".onnx":
            raise ValueError(f"--model {args.model} is an ONNX file; add --backend onnx")
        predictor = Predictor.from_checkpoint(args.model or default_model_path(), batch_size=args.batch_size, num_workers=args.workers, tta=args.tta)
    if args.metadata:
        if predictor.info.meta_schema is None:
            raise ValueError("--metadata was given, but this model was trained on images only and would ignore it")
        attach_metadata(manifest, args.metadata)
    result = predictor.predict_manifest(manifest, continue_on_error=args.continue_on_error)
    frame = predictions_frame(result, output_format=args.format)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.6f")
    print(f"wrote {len(frame)} predictions to {out}. {DISCLAIMER}")
    if result.errors:
        print(f"{len(result.errors)} image(s) could not be read and have no prediction:", file=sys.stderr)
        for path, error in result.errors.items():
            print(f"  {path}: {error}", file=sys.stderr)
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from dermdx.export import export_onnx

    if not args.int8:
        report = export_onnx(args.model or default_model_path(), args.out, opset=args.opset, parity_images=args.parity, tolerance=args.tolerance)
        print(report.to_text())
        return 0
    import tempfile

    from dermdx.quantize import quantize_int8

    if not args.calibration:
        raise ValueError("--int8 needs --calibration IMAGES_OR_DIRS: real images (a few hundred) to set the int8 ranges")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        print(export_onnx(args.model or default_model_path(), fp32, opset=args.opset, parity_images=args.parity, tolerance=args.tolerance).to_text())
        print(quantize_int8(fp32, args.out, args.calibration).to_text())
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from dermdx.data.check import check_path

    column_map = {}
    for item in args.column:
        if "=" not in item:
            raise ValueError(f"--column {item!r} must look like MANIFEST_COLUMN=CSV_COLUMN, e.g. image=filename")
        key, value = item.split("=", 1)
        column_map[key] = value
    report = check_path(args.path, format=args.format, column_map=column_map or None, image_root=args.image_root)
    print(report.to_text())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dermdx", description=f"Skin-lesion diagnosis support. {DISCLAIMER}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a YAML config, then report on its held-out split")
    train.add_argument("config")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    train.add_argument("--no-resume", action="store_true", help="start again even if the output folder has a saved state")
    train.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    train.set_defaults(run=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="metrics, plots and an HTML report for a model on labelled data")
    evaluate.add_argument("--model", help="model.safetensors (default: the shipped model)")
    evaluate.add_argument("--config", help="a training config: evaluate on its held-out split")
    evaluate.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    evaluate.add_argument("--data", help="a labelled data set (CSV or folder) to evaluate on, all rows")
    evaluate.add_argument("--format", default="ham10000", help="format of --data: ham10000, isic, derm7pt, ph2, folder, csv")
    evaluate.add_argument("--image-root", help="folder of the images of --data, if not the default")
    evaluate.add_argument("--out", required=True, help="output folder for metrics.json, plots and report.html")
    evaluate.add_argument("--bootstrap", type=int, default=1000)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--tta", default="none", choices=("none", "flip", "d4"), help="test-time augmentation: average over flips (flip) or all 8 rotations/flips (d4)")
    evaluate.add_argument("--workers", type=int, default=2)
    evaluate.set_defaults(run=_cmd_evaluate)

    predict = commands.add_parser("predict", help="class probabilities for image files and folders")
    predict.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    predict.add_argument("--model", help="model.safetensors (default: the shipped model)")
    predict.add_argument("--out", required=True, help="CSV to write")
    predict.add_argument("--format", default="dermdx", choices=OUTPUT_FORMATS)
    predict.add_argument("--metadata", help="CSV with image (file name without extension), age, sex, site: used by models that fuse metadata")
    predict.add_argument("--continue-on-error", action="store_true", help="skip unreadable images, list them, exit 1")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--tta", default="none", choices=("none", "flip", "d4"), help="test-time augmentation: average over flips (flip) or all 8 rotations/flips (d4)")
    predict.add_argument("--workers", type=int, default=2)
    predict.add_argument("--backend", default="torch", choices=("torch", "onnx"), help="onnx: run a .onnx from dermdx export on ONNX Runtime (needs the [onnx] extra)")
    predict.set_defaults(run=_cmd_predict)

    export = commands.add_parser("export", help="export a model to ONNX, checked against PyTorch")
    export.add_argument("--model", help="model.safetensors (default: the shipped model)")
    export.add_argument("--format", default="onnx", choices=("onnx",), help="export format")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--parity", nargs="+", type=Path, metavar="IMAGES_OR_DIRS", help="images to compare PyTorch and ONNX Runtime on (default: 4 seeded random inputs)")
    export.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed |logit difference| (default 1e-3)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    export.add_argument("--int8", action="store_true", help="write a static int8 (QDQ) model calibrated on --calibration images")
    export.add_argument("--calibration", nargs="+", type=Path, metavar="IMAGES_OR_DIRS", help="real images for int8 calibration")
    export.set_defaults(run=_cmd_export)

    data = commands.add_parser("data", help="data set tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser("check", help="counts, class balance, centres, missing metadata, unreadable files")
    check.add_argument("path", help="a manifest CSV or an image folder with one subfolder per class")
    check.add_argument("--format", help="force a format instead of guessing it: ham10000, isic, derm7pt, ph2, folder, csv")
    check.add_argument("--column", action="append", default=[], metavar="COLUMN=CSV_COLUMN", help="column map for --format csv (image=..., label=...)")
    check.add_argument("--image-root", help="folder the CSV's image paths start from")
    check.set_defaults(run=_cmd_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, ImportError, KeyError) as error:
        print(f"dermdx {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
