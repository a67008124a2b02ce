"""The ``dermdx`` command: a thin layer over the library.

    dermdx train CONFIG.yaml [--set section.key=value ...]
    dermdx evaluate --model M (--config CONFIG.yaml | --data PATH [--format F]) --out DIR
    dermdx predict IMAGES_OR_DIRS... [--model M] --out preds.csv [--format isic2018] [--backend auto|torch|onnx]
    dermdx export --model M --format onnx --out model.onnx [--parity IMAGES_OR_DIRS ...] [--tolerance 1e-3]
    dermdx calibrate --model M --config CONFIG.yaml --out DIR [--coverage 0.8] [--save-as PATH]
    dermdx calibrate --model A --model B --config CONFIG.yaml --out DIR    (one temperature for the ensemble's mean)
    dermdx diagnose IMAGE [--model M] [--age N --sex S --site SITE] --out DIR [--cam-method gradcam]
    dermdx data check PATH [--format F]
    dermdx serve [--model M] [--host 127.0.0.1] [--port 8000] [--data-dir ~/.dermdx] [--db URL] [--create-token NAME --role admin]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dermdx.default_model import default_classifier_paths, default_classifier_temperatures, default_model_path
from dermdx.inference import DISCLAIMER, OUTPUT_FORMATS

if TYPE_CHECKING:
    from dermdx.config import RunConfig
    from dermdx.ensemble import EnsemblePredictor
    from dermdx.inference import Predictor

def _cmd_train(args: argparse.Namespace) -> int:
    from dermdx.config import load_config
    from dermdx.evaluation import evaluate
    from dermdx.inference import Predictor
    from dermdx.training import MODEL_FILE, fit

    config = load_config(args.config, args.set)
    summary = fit(config, resume=not args.no_resume)
    data = summary["data"]
    out = Path(config.output_dir)
    if len(data.test_idx) == 0:
        print(f"model: {out / MODEL_FILE} (split.kind none: no held-out rows; estimate its accuracy by cross-validating the same config)")
        return 0
    predictor = Predictor.from_checkpoint(out / MODEL_FILE, num_workers=config.train.num_workers, batch_size=64)
    metrics = evaluate(
        predictor, data.manifest.subset(data.test_idx), out / "eval", n_bootstrap=args.bootstrap,
        title=f"dermdx held-out evaluation: {config.output_dir}", extra={"split": f"{config.split.kind} fold {config.split.fold} {config.split.centre or ''}".strip()},
    )
    overall = metrics["overall"]
    print(f"model: {out / MODEL_FILE}")
    print(f"held-out ({overall['n']} images) balanced accuracy {overall['balanced_accuracy']:.4f}, report {out / 'eval' / 'report.html'}")
    return 0


BACKENDS = ("auto", "torch", "onnx")
BACKEND_HELP = ("what runs the model: onnx = ONNX Runtime (a .onnx from dermdx export, or a .safetensors converted in memory "
                "and checked against PyTorch; about 4x faster on CPU), torch = PyTorch, auto (default) = onnx when onnx "
                "and onnxruntime import, else torch")


def _engine(backend: str) -> str:
    """The inference engine for ``.safetensors`` models under ``--backend``; auto says when it falls back."""
    if backend == "torch":
        return "torch"
    if backend == "onnx":
        return "onnxruntime"
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        print("note: running on PyTorch because onnx or onnxruntime does not import (pip install onnx onnxruntime "
              "runs the same model about 4x faster on CPU)", file=sys.stderr)
        return "torch"
    return "onnxruntime"


def _checkpoint_predictor(models: list[str | Path] | None, args: argparse.Namespace) -> Predictor | EnsemblePredictor:
    """One model file: its Predictor; several: the mean of them (EnsemblePredictor), with the
    ensemble temperature of ``--ensemble-calibration`` or, for the shipped classifier, of its record.
    ``models`` None: the shipped classifier."""
    from dermdx.calibration import read_ensemble_calibration
    from dermdx.ensemble import EnsemblePredictor
    from dermdx.inference import Predictor

    options = {"batch_size": args.batch_size, "num_workers": args.workers, "tta": args.tta, "engine": _engine(getattr(args, "backend", "torch"))}
    calibration_file = getattr(args, "ensemble_calibration", None)
    if models is None:
        if calibration_file:
            raise ValueError("--ensemble-calibration needs the --model files it was fitted for; the shipped classifier brings its own")
        temperature, temperature_without_metadata = default_classifier_temperatures()
        return EnsemblePredictor.from_checkpoints(
            default_classifier_paths(), temperature=temperature, temperature_without_metadata=temperature_without_metadata, **options
        )
    if len(models) == 1:
        if calibration_file:
            raise ValueError("--ensemble-calibration is for several --model files; a single model carries its own calibration")
        return Predictor.from_checkpoint(models[0], **options)
    ensemble = EnsemblePredictor.from_checkpoints(models, **options)
    if calibration_file:
        record = read_ensemble_calibration(calibration_file, [m.sha256 for m in ensemble.members])
        ensemble.temperature = float(record["temperature"])
        blind = record.get("temperature_without_metadata")
        ensemble.temperature_without_metadata = None if blind is None else float(blind)
    return ensemble


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dermdx.config import DataConfig, load_config
    from dermdx.data.adapters import load_manifest
    from dermdx.data.splits import train_val_indices
    from dermdx.evaluation import evaluate

    predictor = _checkpoint_predictor(args.model, args)
    if args.config:
        config = load_config(args.config, args.set)
        manifest = load_manifest(config.data)
        _, held_out = train_val_indices(manifest, config.split)
        manifest = manifest.subset(held_out)
    elif args.data:
        manifest = load_manifest(DataConfig(format=args.format, path=args.data, image_root=args.image_root))
    else:
        raise ValueError("evaluate needs --config CONFIG.yaml (its held-out split) or --data PATH")
    metrics = evaluate(predictor, manifest, args.out, n_bootstrap=args.bootstrap, use_metadata=not args.no_metadata)
    overall = metrics["overall"]
    print(f"{overall['n']} images: balanced accuracy {overall['balanced_accuracy']:.4f}; report {Path(args.out) / 'report.html'}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from dermdx.data.adapters import read_images
    from dermdx.data.meta import MetaSchema, attach_metadata, unknown_sites
    from dermdx.ensemble import EnsemblePredictor
    from dermdx.inference import Predictor, predictions_frame

    manifest = read_images(args.images)
    models = args.model
    onnx_files = [m for m in models or [] if Path(m).suffix == ".onnx"]
    if onnx_files:
        if args.backend == "torch":
            raise ValueError(f"--model {onnx_files[0]} is an ONNX file; PyTorch cannot run it: use --backend onnx (or auto)")
        if len(models) != 1:
            raise ValueError(f"an ONNX file is run on its own: give one --model FILE.onnx, got --model {' '.join(models)}")
        predictor = Predictor.from_onnx(models[0], batch_size=args.batch_size, num_workers=args.workers, tta=args.tta)
    else:
        predictor = _checkpoint_predictor(models, args)
    if args.metadata:
        members = predictor.members if isinstance(predictor, EnsemblePredictor) else [predictor]
        if all(member.info.meta_schema is None for member in members):
            raise ValueError("--metadata was given, but this model was trained on images only and would ignore it")
        attach_metadata(manifest, args.metadata)
        warned: set[tuple[str, ...]] = set()
        for member in members:
            if member.info.meta_schema is None:
                continue
            schema = MetaSchema.from_dict(member.info.meta_schema)
            unknown = unknown_sites(manifest.frame, schema)
            if unknown and tuple(schema.sites) not in warned:
                warned.add(tuple(schema.sites))
                print(f"warning: {args.metadata}: site(s) {unknown} are not among the sites the model knows "
                      f"({', '.join(schema.sites)}); they are read as unknown", file=sys.stderr)
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


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from dermdx.calibration import calibrate_model, selection_rows
    from dermdx.checkpoint import read_info
    from dermdx.config import load_config

    config = load_config(args.config, args.set)
    if len(args.model) > 1:
        return _calibrate_ensemble(args, config)
    rows = selection_rows(config, read_info(args.model[0]))
    result = calibrate_model(
        args.model[0], rows, args.out, coverage=args.coverage, class_bias=args.class_bias, save_as=args.save_as,
        description=f"selection split of {args.config}", batch_size=args.batch_size, num_workers=args.workers,
    )
    selective, abstention = result["selective"], result["abstention"]
    print(f"temperature {result['temperature']:.3f} fitted on {result['n_images']} selection images: "
          f"ECE {result['ece_before']:.4f} -> {result['ece_after']:.4f}, NLL {result['nll_before']:.4f} -> {result['nll_after']:.4f}")
    print(f"abstention: answer when the top-class probability is >= {abstention['min_confidence']:.3f}, which keeps "
          f"{selective['coverage']:.0%} of these images; balanced accuracy there {selective['balanced_accuracy_at_coverage']:.4f} "
          f"(all images: {selective['balanced_accuracy_all']:.4f})")
    print(f"model {result['model']}: SHA-256 {result['sha256_before']} -> {result['sha256_after']} (weights unchanged)")
    print(f"calibration.json, reliability_before.png, reliability_after.png, risk_coverage.png in {args.out}")
    return 0


def _calibrate_ensemble(args: argparse.Namespace, config: RunConfig) -> int:
    """Several --model: one temperature for their mean, on the selection rows they all share."""
    from dermdx.calibration import ENSEMBLE_CALIBRATION_FILE, calibrate_ensemble, selection_rows
    from dermdx.checkpoint import read_info
    from dermdx.ensemble import EnsemblePredictor

    if args.save_as or args.class_bias:
        raise ValueError("--save-as and --class-bias are for one model; an ensemble's temperature is written to --out")
    infos = [read_info(model) for model in args.model]
    for model, info in zip(args.model[1:], infos[1:], strict=True):
        if info.data_fingerprint != infos[0].data_fingerprint:
            raise ValueError(f"{model} was trained on other rows than {args.model[0]}, so they share no selection split: calibrate each with its own --config")
    rows = selection_rows(config, infos[0])
    ensemble = EnsemblePredictor.from_checkpoints(args.model, batch_size=args.batch_size, num_workers=args.workers, tta=args.tta, engine=_engine(args.backend))
    result = calibrate_ensemble(ensemble, rows, args.out, coverage=args.coverage, description=f"selection split of {args.config}")
    print(f"ensemble temperature {result['temperature']:.3f} fitted on {result['n_images']} selection images ({args.tta} TTA): "
          f"ECE {result['ece_before']:.4f} -> {result['ece_after']:.4f}, NLL {result['nll_before']:.4f} -> {result['nll_after']:.4f}, "
          f"mean confidence {result['mean_confidence_before']:.3f} -> {result['mean_confidence_after']:.3f} at accuracy {result['accuracy']:.3f}")
    blind = result["without_metadata"]
    if blind is not None:
        print(f"without metadata (age, sex, site hidden): temperature {result['temperature_without_metadata']:.3f}, "
              f"ECE {blind['ece_before']:.4f} -> {blind['ece_after']:.4f}, mean confidence {blind['mean_confidence_before']:.3f} -> "
              f"{blind['mean_confidence_after']:.3f} at accuracy {blind['accuracy']:.3f}; used for rows that give none of the three")
    print(f"{Path(args.out) / ENSEMBLE_CALIBRATION_FILE}: pass it to predict/evaluate with --ensemble-calibration, with the same --model files")
    return 0


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from dermdx.decision import AbstentionConfig
    from dermdx.diagnosis import diagnose, summary_text
    from dermdx.inference import Predictor

    image = Path(args.image)
    if not image.is_file():
        raise FileNotFoundError(f"image not found: {image}")
    model_path = args.model or default_model_path()
    if Path(model_path).suffix == ".onnx":
        raise ValueError(f"--model {model_path} is an ONNX export; diagnose needs the .safetensors model (the heatmap uses gradients)")
    predictor = Predictor.from_checkpoint(model_path, batch_size=1, num_workers=0)
    abstention = None
    if args.min_confidence is not None:
        abstention = AbstentionConfig(min_confidence=args.min_confidence, source="set on the command line (--min-confidence)")
    from dermdx.diagnosis_tools import DiagnosisTools

    tools = DiagnosisTools.for_predictor(predictor, knowledge_path=args.knowledge, segment=not args.no_segmentation)
    report = diagnose(
        predictor, image, args.out, age=args.age, sex=args.sex, site=args.site, clinical_photo=args.clinical,
        mm_per_pixel=args.mm_per_pixel, cam_method=args.cam_method, abstention=abstention, model_path=model_path, tools=tools,
    )
    print(summary_text(report, args.out))
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


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
        from sqlalchemy.engine import make_url

        from dermdx.service.settings import ServiceSettings
        from dermdx.service.storage import Storage
    except ImportError as error:
        raise ImportError(f"dermdx serve needs the [serve] extra: pip install 'dermdx[serve]' ({error})") from error

    settings = ServiceSettings(data_dir=args.data_dir, db_url=args.db, cors_origins=tuple(args.cors_origin), max_upload_bytes=int(args.max_upload_mb * 1_000_000))
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    if args.create_token:
        storage = Storage(settings.database_url, settings.image_dir)
        with storage.session() as session:
            token = storage.create_token(session, args.create_token, args.role)
        storage.dispose()
        print(f"{args.role} token {args.create_token!r} for {database}; shown only now (the database keeps its SHA-256):")
        print(token)
        return 0
    from dermdx.inference import Predictor
    from dermdx.service.app import create_app

    predictor = Predictor.from_checkpoint(args.model or default_model_path(), batch_size=1, num_workers=0)
    app = create_app(predictor, settings)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}, reachable from other machines; put it behind HTTPS (a reverse proxy)", file=sys.stderr)
    print(f"dermdx service: http://{args.host}:{args.port}/ (API docs /docs), database {database}, images in {settings.image_dir}. {DISCLAIMER}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


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
    evaluate.add_argument("--model", action="append", help="model.safetensors (default: the shipped classifier, an ensemble); give it several times to score the mean of several models (an ensemble)")
    evaluate.add_argument("--config", help="a training config: evaluate on its held-out split")
    evaluate.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    evaluate.add_argument("--data", help="a labelled data set (CSV or folder) to evaluate on, all rows")
    evaluate.add_argument("--format", default="ham10000", help="format of --data: ham10000, isic, derm7pt, ph2, folder, csv")
    evaluate.add_argument("--image-root", help="folder of the images of --data, if not the default")
    evaluate.add_argument("--out", required=True, help="output folder for metrics.json, plots and report.html")
    evaluate.add_argument("--bootstrap", type=int, default=1000)
    evaluate.add_argument("--no-metadata", action="store_true", help="hide age, sex and site from the model (a fusion model as used without metadata); subgroups still use them")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--tta", default="none", choices=("none", "flip", "d4"), help="test-time augmentation: average over flips (flip) or all 8 rotations/flips (d4)")
    evaluate.add_argument("--workers", type=int, default=2)
    evaluate.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    evaluate.add_argument("--ensemble-calibration", help="ensemble_calibration.json from dermdx calibrate with the same --model files: one temperature for their mean")
    evaluate.set_defaults(run=_cmd_evaluate)

    predict = commands.add_parser("predict", help="class probabilities for image files and folders")
    predict.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    predict.add_argument("--model", action="append", help="model.safetensors (default: the shipped classifier, an ensemble); give it several times to average several models (an ensemble)")
    predict.add_argument("--out", required=True, help="CSV to write")
    predict.add_argument("--format", default="dermdx", choices=OUTPUT_FORMATS)
    predict.add_argument("--metadata", help="CSV with image (file name without extension), age, sex, site: used by models that fuse metadata")
    predict.add_argument("--continue-on-error", action="store_true", help="skip unreadable images, list them, exit 1")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--tta", default="d4", choices=("none", "flip", "d4"), help="test-time augmentation: average over the 8 rotations/flips (d4, default: +1.2 points balanced accuracy on HAM10000 fold 0, 8x the compute), flips only (flip) or none")
    predict.add_argument("--workers", type=int, default=2)
    predict.add_argument("--ensemble-calibration", help="ensemble_calibration.json from dermdx calibrate with the same --model files: one temperature for their mean")
    predict.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    predict.set_defaults(run=_cmd_predict)

    export = commands.add_parser("export", help="export a model to ONNX, checked against PyTorch")
    export.add_argument("--model", help="model.safetensors (default: the shipped single network)")
    export.add_argument("--format", default="onnx", choices=("onnx",), help="export format")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--parity", nargs="+", type=Path, metavar="IMAGES_OR_DIRS", help="images to compare PyTorch and ONNX Runtime on (default: 4 seeded random inputs)")
    export.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed |logit difference| (default 1e-3)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    export.add_argument("--int8", action="store_true", help="write a static int8 (QDQ) model calibrated on --calibration images")
    export.add_argument("--calibration", nargs="+", type=Path, metavar="IMAGES_OR_DIRS", help="real images for int8 calibration")
    export.set_defaults(run=_cmd_export)

    calibrate = commands.add_parser(
        "calibrate", help="fit temperature scaling and the abstention threshold on a config's selection split; store them in the model",
        description=(
            "Fits a temperature (probabilities that match observed accuracy) and the confidence threshold below which "
            "diagnose answers 'refer: uncertain', on the SELECTION split of the config the model was trained with: the "
            "grouped inner part of the training fold that chose the epoch. Not the held-out test fold, so held-out "
            "figures stay unbiased; not the training rows, on which the model is over-confident. Rewrites the model file "
            "(weights unchanged, new SHA-256) unless --save-as is given."
        ),
    )
    calibrate.add_argument("--model", action="append", required=True, help="model.safetensors written by dermdx train with --config; several: fit one temperature for their mean (an ensemble)")
    calibrate.add_argument("--config", required=True, help="the training config of --model: its selection split is used")
    calibrate.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    calibrate.add_argument("--out", required=True, help="folder for calibration.json and the reliability and risk-coverage PNGs")
    calibrate.add_argument("--coverage", type=float, default=0.8, help="share of cases the abstention threshold keeps (default 0.8)")
    calibrate.add_argument("--class-bias", action="store_true", help="also fit per-class prior offsets that maximise balanced accuracy on the same rows")
    calibrate.add_argument("--save-as", help="write the calibrated model here instead of rewriting --model")
    calibrate.add_argument("--tta", default="d4", choices=("none", "flip", "d4"), help="ensembles only: the test-time augmentation predict will use (default d4, predict's default)")
    calibrate.add_argument("--backend", default="auto", choices=BACKENDS, help="ensembles only: " + BACKEND_HELP)
    calibrate.add_argument("--batch-size", type=int, default=64)
    calibrate.add_argument("--workers", type=int, default=2)
    calibrate.set_defaults(run=_cmd_calibrate)

    from dermdx.explain.cam import CAM_METHODS, DEFAULT_METHOD

    diagnose = commands.add_parser(
        "diagnose", help="decision-support report for one lesion image: report.json, report.html, CAM overlay",
        description=f"Probabilities for every class, a top-3 differential, malignancy risk, abstention with its reason and a CAM heatmap. {DISCLAIMER}",
    )
    diagnose.add_argument("image", help="the dermoscopic image")
    diagnose.add_argument("--model", help="model.safetensors (default: the shipped single network)")
    diagnose.add_argument("--age", help="patient age in years (used if the model fuses metadata)")
    diagnose.add_argument("--sex", help="male or female")
    diagnose.add_argument("--site", help="body site, one the model knows (e.g. back, face)")
    diagnose.add_argument("--out", required=True, help="output folder for report.json, report.html and the PNGs (image, cam_overlay, lesion_outline, clinical)")
    diagnose.add_argument("--cam-method", default=DEFAULT_METHOD, help=f"heatmap method: {', '.join(CAM_METHODS)} (default {DEFAULT_METHOD})")
    diagnose.add_argument("--clinical", metavar="PHOTO", help="a clinical (close-up) photo of the same lesion: checked and shown beside the dermoscopic image")
    diagnose.add_argument("--mm-per-pixel", type=float, help="the dermoscopic image's scale, for the lesion diameter in mm")
    diagnose.add_argument("--knowledge", metavar="YAML", help="a triage knowledge base to use instead of the shipped one (dermdx/clinical/knowledge.yaml)")
    diagnose.add_argument("--no-segmentation", action="store_true", help="skip the lesion outline and ABCD measurements")
    diagnose.add_argument("--min-confidence", type=float, help="abstain below this top-class probability (default: the threshold stored by dermdx calibrate, else 0.5)")
    diagnose.set_defaults(run=_cmd_diagnose)

    data = commands.add_parser("data", help="data set tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser("check", help="counts, class balance, centres, missing metadata, unreadable files")
    check.add_argument("path", help="a manifest CSV or an image folder with one subfolder per class")
    check.add_argument("--format", help="force a format instead of guessing it: ham10000, isic, derm7pt, ph2, folder, csv")
    check.add_argument("--column", action="append", default=[], metavar="COLUMN=CSV_COLUMN", help="column map for --format csv (image=..., label=...)")
    check.add_argument("--image-root", help="folder the CSV's image paths start from")
    check.set_defaults(run=_cmd_data_check)

    serve = commands.add_parser("serve", help="the clinician web service: REST API, web page, case database (needs the [serve] extra)")
    serve.add_argument("--model", help="model.safetensors (default: the shipped single network)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", default="~/.dermdx", help="folder for the SQLite database and uploaded images (default ~/.dermdx)")
    serve.add_argument("--db", help="database URL instead of SQLite in --data-dir, e.g. postgresql+psycopg://user:pass@host/dermdx")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="allow browser calls from this origin (default: none)")
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted image file in MB (default 10)")
    serve.add_argument("--create-token", metavar="NAME", help="create an API token named NAME, print it once and exit (no model needed)")
    serve.add_argument("--role", default="clinician", choices=("clinician", "admin"), help="role of --create-token (default clinician)")
    serve.set_defaults(run=_cmd_serve)
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
