"""Everything the app shows for one record, computed by components that are loaded once."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from esi.constants import PTBXL_AGE_OVER_89
from esi.plot import plot_ecg

from .cqa_view import CqaDescriber
from .inference import EsiPredictor, Predictions
from .probe import SampleProbe
from .records import EcgRecord, RecordError, SampleCatalogue, read_upload
from .similar import Neighbour, SampleIndex

logger = logging.getLogger(__name__)
PLOT_DPI = 150


@dataclass
class Analysis:
    heading: str
    plot: Image.Image
    measurements: list[list[str]]
    description: str
    predictions: Predictions | None  # None without a model
    caption: str | None  # None when the model has no caption decoder (or there is no model)
    neighbours: list[Neighbour]


def describe_record(record: EcgRecord) -> str:
    """`PTB-XL ecg_id 547 · female, 80 y · 100 Hz, 10.0 s` or `Uploaded record 00547_lr · 100 Hz, 10.0 s`."""
    parts = [f"PTB-XL ecg_id {record.ecg_id}" if record.ecg_id is not None else f"Uploaded record {record.name}"]
    who = [record.sex] if record.sex else []
    if record.age is not None:
        who.append("over 89 y" if record.age >= PTBXL_AGE_OVER_89 else f"{record.age:.0f} y")
    if who:
        parts.append(", ".join(who))
    seconds = record.signal.shape[1] / record.sampling_rate
    parts.append(f"{record.sampling_rate} Hz, {seconds:.1f} s")
    return " · ".join(parts)


def render_plot(record: EcgRecord, title: str) -> Image.Image:
    figure = plot_ecg(record.signal, record.sampling_rate, record.lead_names, title=title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PLOT_DPI)
    buffer.seek(0)
    return Image.open(buffer)


class Analyser:
    """Sample catalogue, CQA describer and (when a model folder exists) the model and its sample index."""

    def __init__(self, samples_dir: Path, model_dir: Path | None, cache_dir: Path) -> None:
        self.catalogue = SampleCatalogue(samples_dir)
        self.describer = CqaDescriber(samples_dir)
        self.predictor = EsiPredictor(model_dir) if model_dir is not None else None
        self.index = SampleIndex(self.predictor, self.catalogue, cache_dir) if self.predictor else None
        needs_probe = self.predictor is not None and not self.predictor.predicts
        self.probe = SampleProbe(self.index, self.catalogue) if needs_probe else None

    def analyse_upload(self, paths: list[str]) -> Analysis:
        return self.analyse(read_upload(paths))

    def analyse_sample(self, ecg_id: int) -> Analysis:
        return self.analyse(self.catalogue.read(ecg_id))

    def analyse(self, record: EcgRecord) -> Analysis:
        heading = describe_record(record)
        try:
            cqa = self.describer.describe(record)
            predictions = caption = None
            neighbours: list[Neighbour] = []
            if self.predictor is not None:
                caption = self.predictor.caption(record)
                embedding = self.predictor.embed([record])[0]
                predictions = self.probe.predict(embedding) if self.probe else self.predictor.predict(record)
                neighbours = self.index.nearest(embedding, k=5, exclude=record.ecg_id)
            plot = render_plot(record, heading)
        except RecordError:
            raise
        except ValueError as error:  # measurement or preprocessing refused the signal
            logger.warning("could not analyse %s: %s", record.name, error)
            raise RecordError(f"The record could not be analysed: {error}") from None
        return Analysis(heading, plot, cqa.table, cqa.description, predictions, caption, neighbours)
