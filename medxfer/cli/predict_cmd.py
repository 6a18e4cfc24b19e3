"""``medxfer predict``: apply a finished run's model to new image files."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import typer

from medxfer.cli.console import err, warn
from medxfer.cli.state import state_of
from medxfer.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add the ``predict`` command to ``app``."""

    @app.command("predict")
    def predict(
        ctx: typer.Context,
        inputs: list[Path] = typer.Argument(
            ..., help="Image files (any supported format) or DICOM series folders."),
        run: Path = typer.Option(..., "--run", help="Folder of a finished `medxfer run`."),
        output: str | None = typer.Option(
            None, "--output", "-o", help="Classification: CSV file to write, or a folder "
            "(an existing one, or a name ending in /) to write predictions.csv into "
            "(default: print to stdout). Segmentation: folder for the masks and masks.csv "
            "(required)."),
        dicom_seg: bool = typer.Option(
            False, "--dicom-seg", help="Segmentation: also write a DICOM SEG for each DICOM "
            "input (needs `pip install highdicom`)."),
        domain: str = typer.Option(
            "source", "--domain", help="Domain of the inputs, for runs with domain-specific "
            "layers (dsbn, adabn): source or target."),
    ) -> None:
        """Apply a trained run to new files.

        Classification writes one CSV row per input. Segmentation writes one mask per
        input into the --output folder, in the input's format and on its grid (DICOM
        series: NIfTI, plus DICOM SEG with --dicom-seg), and a masks.csv summary.
        """
        import torch

        from medxfer.data import inference_transform
        from medxfer.io import atomic_write_text
        from medxfer.workflows.predict import load_run, run_threshold, unfinished_warning
        from medxfer.workflows.run import wants_imagenet_norm

        from medxfer.models.domain import choose_domain

        loaded = load_run(run, registries=state_of(ctx).registries)
        choose_domain(loaded.model, domain, run)
        unfinished = unfinished_warning(run)
        if unfinished:
            warn(unfinished)
        if loaded.config.task == "segmentation":
            _predict_masks(loaded, inputs, None if output is None else Path(output),
                           dicom_seg=dicom_seg)
            return
        csv_path = None if output is None else _csv_target(output)
        if dicom_seg:
            raise ConfigError("--dicom-seg applies to segmentation runs only; "
                              f"{str(run)!r} is a {loaded.config.task} run")
        pretrained = loaded.config.model.backbone.kwargs.get("pretrained", "none")
        if loaded.config.strategy.name == "scratch":
            pretrained = "none"
        if "imagenet_norm" in loaded.sidecar:
            norm = bool(loaded.sidecar["imagenet_norm"])
        else:
            norm = wants_imagenet_norm(loaded.config, pretrained)
        transform = inference_transform(loaded.config, imagenet_norm=norm,
                                        spatial_dims=int(loaded.sidecar["spatial_dims"]),
                                        in_channels=int(loaded.sidecar["in_channels"]))
        threshold = run_threshold(run)
        names = loaded.class_names
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if loaded.config.task == "classification":
            writer.writerow(["file", "prediction", *[f"prob_{n}" for n in names]])
        else:
            writer.writerow(["file", "prediction"])
        with torch.no_grad():
            for path in inputs:
                image = transform(str(path)).unsqueeze(0)
                out = loaded.model(image).float()
                if loaded.config.task == "classification":
                    probs = torch.softmax(out, dim=1)[0]
                    if threshold is not None and len(probs) == 2:
                        label = int(probs[1] >= threshold)
                    else:
                        label = int(probs.argmax())
                    writer.writerow([str(path), names[label] if names else label,
                                     *[f"{p:.6f}" for p in probs.tolist()]])
                else:
                    writer.writerow([str(path), f"{float(out.reshape(-1)[0]):.6f}"])
        if csv_path is None:
            typer.echo(buffer.getvalue(), nl=False)
        else:
            atomic_write_text(csv_path, buffer.getvalue())
            err().print(f"wrote {len(inputs)} predictions to {csv_path}", highlight=False)


def _csv_target(output: str) -> Path:
    """The CSV file ``--output`` names for a classification or regression run.

    A folder (one that exists, or a name ending in a path separator) gets
    ``predictions.csv`` inside it; anything else is the CSV file itself. An existing file is
    refused: results are never overwritten.
    """
    from medxfer.report.tables import PREDICTIONS_CSV

    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        path = path / PREDICTIONS_CSV
    if path.exists():
        raise ConfigError(f"--output {str(path)!r} exists; results are never overwritten "
                          "(give another file or folder)")
    return path


def _predict_masks(loaded: object, inputs: list[Path], output: Path | None, *,
                   dicom_seg: bool) -> None:
    """Segment ``inputs`` into the ``output`` folder (see :mod:`medxfer.tasks.segmentation.prediction`)."""
    from medxfer.training.amp import resolve_device
    from medxfer.tasks.segmentation.prediction import SUMMARY_NAME, predict_masks

    if output is None:
        raise ConfigError("predict: a segmentation run writes mask files; pass --output FOLDER")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {str(output)!r} is a file; for a segmentation run it "
                          "names the folder for the masks")
    records = predict_masks(loaded, inputs, output, device=resolve_device("auto"),
                            dicom_seg=dicom_seg)
    for record in records:
        extra = f" and {record['dicom_seg']}" if record["dicom_seg"] else ""
        err().print(f"{record['input']} -> {record['mask']}{extra}", highlight=False)
    err().print(f"wrote {len(records)} masks; summary in {output / SUMMARY_NAME}",
                highlight=False)
