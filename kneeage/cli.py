"""Command line: ``python -m kneeage …``. Everything the app does can be run headless."""

from __future__ import annotations

import json
import os
import sys

import click

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@click.group()
@click.version_option(package_name=None, version=__import__("kneeage").__version__, prog_name="kneeage")
def main() -> None:
    """kneeage: bone age from knee radiographs, and the tools to validate it."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--identifying", is_flag=True, help="Also print birth and study dates.")
def info(files: tuple[str, ...], identifying: bool) -> None:
    """Print each FILE's metadata as one JSON line, or why it was refused (exit 1 if any was)."""
    from .errors import KneeageError
    from .imaging import load_radiograph

    refused = 0
    for f in files:
        try:
            r = load_radiograph(f)
            out = {"file": f, "ok": True, **r.metadata(identifying)}
        except KneeageError as e:
            refused += 1
            out = {"file": f, "ok": False, "error": str(e)}
        click.echo(json.dumps(out))
    sys.exit(1 if refused else 0)


@main.command()
@click.option("--n", "n", type=click.IntRange(1), required=True, help="Number of subjects.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--size", type=click.IntRange(64, 4096), default=512, show_default=True, help="Image rows (px).")
@click.option("--hands", is_flag=True, help="Also write each subject's hand film.")
@click.option("--format", "fmt", type=click.Choice(["dicom", "png"]), default="dicom", show_default=True)
def synth(n, seed, out, size, hands, fmt):
    """Write a synthetic cohort (phantom DICOMs, manifest.csv, truth.csv). NOT PATIENT DATA."""
    from tqdm import tqdm

    from .phantom import write_cohort

    with tqdm(total=n, unit="case", disable=None) as bar:
        write_cohort(out, n, seed=seed, size=size, hands=hands, fmt=fmt, progress=lambda i, _n: bar.update(1))
    click.echo(f"wrote {n} synthetic cases to {out}/manifest.csv (truth in {out}/truth.csv)")
