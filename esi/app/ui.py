"""ESI demo: upload a 12-lead ECG file (WFDB, Philips XML, DICOM or CSV; or pick an embedded PTB-XL
sample) and see it on ECG paper with its measurements, the model's class probabilities, the CQA
description, the model's own caption and the most similar sample ECGs. Research software, not a diagnostic device.

    esi-app                            # the released encoder (model_cards/esi-ecg-encoder), else `make demo`'s model
    ESI_MODEL=path/to/model ESI_SAMPLES=data/ptbxl_sample esi-app

Importing this module builds nothing; `build_app_from_env()` builds the page. The repository's `app.py`
(a Hugging Face Space's entry file) calls it at import, as Spaces expect.
GRADIO_SERVER_PORT / GRADIO_SERVER_NAME choose the address; ESI_CACHE where sample embeddings are cached;
ESI_APP_WORKERS how many analyses run at once (default 2), ESI_ANALYSIS_TIMEOUT_S how long one may take
(default 60). One upload is limited to 20 MB in all, one address to ESI_UPLOAD_HOURLY_MB an hour (default 200);
uploads are deleted after their analysis, after 10 minutes if never analysed, and at shutdown.
"""

from __future__ import annotations

import atexit
import functools
import html
import logging
import os
import re
from pathlib import Path

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from esi.app.analysis import Analyser, Analysis
from esi.app.records import MAX_UPLOAD_BYTES
from esi.app.uploads import (
    UploadQuota,
    exit_cleanly_on_sigterm,
    private_upload_folder,
    start_sweeper,
    uploads_in_use,
)
from esi.app.workers import AnalysisTimeout, WorkerFailed, WorkerPool
from esi.constants import DISCLAIMER as SOFTWARE_DISCLAIMER
from esi.constants import RELEASED_ENCODER_DIR
from esi.hub import resolve_model_dir

logger = logging.getLogger("esi.app")
# Relative to the working directory: where `make demo` leaves its model, and the embedded sample.
DEMO_MODEL = Path("outputs") / "demo" / "pretraining" / "model"
DEFAULT_SAMPLES = Path("data") / "ptbxl_sample"
DEFAULT_CACHE = Path("outputs") / "app_cache"

MEASUREMENT_HEADERS = ["Measurement", "Value"]
SIMILAR_HEADERS = ["Rank", "ecg_id", "Cosine similarity", "PTB-XL statements"]
# The page's notice: the package's one disclaimer, then what it means on this page.
DISCLAIMER = (
    f"<strong>{SOFTWARE_DISCLAIMER}</strong> Every number and sentence on this page is an "
    "automated estimate from an experimental model trained on a small public sample. None of it is clinically "
    "validated; do not use it to diagnose, treat or make any decision about a person."
)
# Said on the page and in the log: loading the model runs the model folder's own code.
REMOTE_CODE_NOTE = (
    "The model's code (modeling_esi.py) runs from this folder, which the operator named; a Hub model is loaded "
    "only at a pinned commit."
)
THEME = gr.themes.Soft(primary_hue="blue", neutral_hue="slate")
CSS = """
.esi-header h1 { margin-bottom: 0.1em; }
.esi-header p { margin-top: 0; color: var(--body-text-color-subdued); }
.esi-disclaimer { background: #fff4e5; border: 1px solid #f0b35b; border-left: 6px solid #e8890c;
                  border-radius: 6px; padding: 10px 14px; color: #5c3a00; }
.esi-alert { background: #fdecec; border: 1px solid #e57373; border-radius: 6px; padding: 8px 12px; }
.esi-panel { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px 12px; }
.esi-panel small { color: var(--body-text-color-subdued); }
#measurements table, #similar table { font-family: var(--font); }
footer { display: none !important; }
"""


def escape_markdown(text: str) -> str:
    """User-controlled text (file and lead names, a refusal quoting them, a description or caption quoting a
    record's statements) as literal text in a Markdown component: HTML tags and Markdown syntax (links, images,
    emphasis) are shown, never rendered."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>:])", r"\\\1", html.escape(str(text), quote=False))


def refusal_status(message: str) -> str:
    return f"**Could not analyse this record.** {escape_markdown(message)}"


def no_model_message(model_dir: Path) -> str:
    return (
        f"No trained ESI model found at `{model_dir}`. Run `make demo` (trains a small model on the embedded "
        "sample, a few minutes on a CPU) or set `ESI_MODEL` to a model folder. Measurements and CQA "
        "descriptions still work; predictions, the generated caption and similar ECGs need the model."
    )


def similar_table(analysis: Analysis) -> pd.DataFrame:
    rows = [[rank, n.ecg_id, f"{n.similarity:.3f}", n.statements] for rank, n in enumerate(analysis.neighbours, 1)]
    return pd.DataFrame(rows, columns=SIMILAR_HEADERS)


class PageActions:
    """The page's two actions: an analysis runs in a worker, and its result (or the refusal) becomes the outputs."""

    def __init__(self, pool: WorkerPool, model_dir: Path, has_predictor: bool):
        self.pool, self.model_dir, self.has_predictor = pool, model_dir, has_predictor
        empty_tables = (pd.DataFrame(columns=MEASUREMENT_HEADERS), pd.DataFrame(columns=SIMILAR_HEADERS))
        self.empty = (None, empty_tables[0], None, "", "", "", empty_tables[1])

    def show(self, analysis: Analysis) -> tuple:
        if not self.has_predictor:
            probabilities, method, caption = None, no_model_message(self.model_dir), ""
        else:
            probabilities = analysis.predictions.probabilities
            method = f"**Method:** {analysis.predictions.method}."
            if analysis.caption is None:
                caption = "_(no caption decoder: the released encoder embeds ECGs; captions need a full ESI model)_"
            else:
                caption = escape_markdown(analysis.caption or "") or "_(the model generated an empty caption)_"
        return (
            analysis.plot,
            pd.DataFrame(analysis.measurements, columns=MEASUREMENT_HEADERS),
            probabilities,
            method,
            escape_markdown(analysis.description),  # it quotes the record's own text: shown, never rendered
            caption,
            similar_table(analysis),
        )

    def run(self, method: str, argument) -> tuple:
        try:
            analysis = self.pool.call(method, argument)
        except ValueError as error:  # a refusal: one sentence naming the file and the problem
            gr.Warning(escape_markdown(str(error)))
            return (refusal_status(str(error)), *self.empty)
        except AnalysisTimeout as error:
            gr.Warning(str(error))
            return (f"**Could not analyse this record:** {error}.", *self.empty)
        except WorkerFailed:  # the UI boundary: the traceback is in the log, the user gets a sentence
            logger.exception("analysis failed")
            gr.Warning("The analysis failed unexpectedly; the details are in the server log.")
            return ("**The analysis failed unexpectedly.** The details are in the server log.", *self.empty)
        return (f"**Showing:** {escape_markdown(analysis.heading)}", *self.show(analysis))

    def analyse_upload(self, files: list[str] | None) -> tuple:
        with uploads_in_use(files):
            gone = [Path(f).name for f in files or [] if not Path(f).is_file()]
            if gone:  # Gradio keeps one copy per content: an identical upload was analysed and deleted
                return (refusal_status(f"{', '.join(gone)} is no longer on the server (an identical upload was "
                                       "analysed and deleted meanwhile); upload it again."), *self.empty)  # fmt: skip
            return self.run("analyse_upload", files)

    def analyse_sample(self, ecg_id: int | None) -> tuple:
        if ecg_id is None:
            return ("Choose a sample ECG.", *self.empty)
        return self.run("analyse_sample", int(ecg_id))


def _header(model_dir: Path, has_model: bool) -> None:
    gr.HTML(
        "<div class='esi-header'><h1>ESI: ECG Semantic Integrator</h1>"
        "<p>A 12-lead ECG foundation model pretrained against cardiology text. Paper: "
        "<a href='https://arxiv.org/abs/2405.19366' target='_blank'>arXiv 2405.19366</a></p></div>"
    )
    gr.HTML(f"<div class='esi-disclaimer' id='disclaimer'>{DISCLAIMER}</div>")
    if not has_model:
        gr.Markdown(no_model_message(model_dir), elem_classes="esi-alert", elem_id="no-model")


def _inputs(catalogue) -> tuple[gr.File, gr.Button, gr.Dropdown]:
    """The upload box, its button and the sample list."""
    with gr.Row(equal_height=False):
        upload = gr.File(
            label="Upload an ECG: WFDB .hea + .dat/.mat, Philips XML, DICOM (.dcm) or CSV (max 20 MB)",
            file_count="multiple",
            height=150,
            scale=3,
            elem_id="upload",
        )
        with gr.Column(scale=2, min_width=300):
            upload_button = gr.Button("Analyse upload", variant="primary", elem_id="analyse-upload")
            sample = gr.Dropdown(
                choices=[(catalogue.label(i), i) for i in catalogue.ecg_ids],
                value=None,
                label=f"…or pick one of the {len(catalogue.ecg_ids)} embedded PTB-XL samples",
                elem_id="sample",
            )
    return upload, upload_button, sample


def _measurements_and_predictions() -> tuple[gr.Dataframe, gr.Label, gr.Markdown]:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            measurements = gr.Dataframe(
                headers=MEASUREMENT_HEADERS,
                label="Measurements (automated, from the signal)",
                interactive=False,
                wrap=True,
                max_height=800,
                column_widths=["55%", "45%"],
                elem_id="measurements",
            )
        with gr.Column(scale=1):
            predictions = gr.Label(
                num_top_classes=5,
                label="Model: PTB-XL diagnostic superclasses",
                show_heading=False,  # no headline class: these are research scores, not a diagnosis
                elem_id="predictions",
            )
            method = gr.Markdown(elem_id="method")
    return measurements, predictions, method


def _text_panel(title: str, note: str, elem_id: str) -> gr.Markdown:
    """A titled panel with a note on where its text comes from; the Markdown component the text goes in."""
    with gr.Column(scale=1, elem_classes="esi-panel"):
        gr.Markdown(f"#### {title}\n<small>{note}</small>")
        return gr.Markdown(elem_id=elem_id)


def _texts_and_similar() -> tuple[gr.Markdown, gr.Markdown, gr.Dataframe]:
    """The CQA description and the model's caption side by side, then the most similar sample ECGs."""
    with gr.Row(equal_height=False):
        description = _text_panel(
            "CQA description (template backend)",
            "Measurements, PTB-XL statements and knowledge-base passages, phrased by the Cardio Query Assistant's "
            "template writer and faithfulness-checked.",
            elem_id="cqa-description",
        )
        caption = _text_panel(
            "Caption generated by the ESI model",
            "Greedy decoding by the model's own caption decoder; its quality depends entirely on how long the model "
            "was trained.",
            elem_id="model-caption",
        )
    similar = gr.Dataframe(
        headers=SIMILAR_HEADERS,
        label="Most similar ECGs in the embedded sample (cosine similarity of ESI embeddings)",
        interactive=False,
        wrap=True,
        column_widths=["6%", "9%", "12%", "73%"],
        elem_id="similar",
    )
    return description, caption, similar


def _start_workers(
    model_dir: Path | None, samples_dir: Path, cache_dir: Path, workers: int
) -> tuple[Analyser, WorkerPool]:
    """The analyser built here once (for the sample list, and to fill the embedding cache the workers then read),
    and the worker processes that run the analyses."""
    start_sweeper(private_upload_folder())
    analyser = Analyser(samples_dir, model_dir, cache_dir)
    pool = WorkerPool(
        functools.partial(Analyser, samples_dir, model_dir, cache_dir),
        count=workers,
        timeout_s=float(os.environ.get("ESI_ANALYSIS_TIMEOUT_S", "60")),
    )
    atexit.register(pool.close)
    return analyser, pool


def build_app(model_dir: Path, samples_dir: Path, cache_dir: Path = DEFAULT_CACHE) -> gr.Blocks:
    """The demo UI; heavy objects (model, retriever, sample index) are loaded here, once."""
    has_model = (model_dir / "config.json").is_file()
    if has_model:
        logger.warning("loading %s with trust_remote_code: %s", model_dir, REMOTE_CODE_NOTE)
    workers = int(os.environ.get("ESI_APP_WORKERS", "2"))
    analyser, pool = _start_workers(model_dir if has_model else None, samples_dir, cache_dir, workers)
    predictor, catalogue = analyser.predictor, analyser.catalogue
    actions = PageActions(pool, model_dir, has_predictor=predictor is not None)
    # Uploads Gradio still knows of are removed every 10 minutes once an hour old, and all at shutdown.
    with gr.Blocks(title="ESI: ECG Semantic Integrator", delete_cache=(600, 3600)) as demo:
        _header(model_dir, has_model)
        upload, upload_button, sample = _inputs(catalogue)
        status = gr.Markdown("Upload a record or pick a sample.", elem_id="status")
        gr.Markdown("#### 12-lead ECG on ECG paper: 25 mm/s, 10 mm/mV, 1 mm minor and 5 mm major grid")
        plot = gr.Image(show_label=False, type="pil", format="png", interactive=False, elem_id="ecg-plot")
        measurements, predictions, method = _measurements_and_predictions()
        description, caption, similar = _texts_and_similar()
        if predictor is not None:
            gr.Markdown(
                f"Model {escape_markdown(model_dir)} (sha256 {predictor.hash[:12]}), {len(catalogue.ecg_ids)} sample "
                f"ECGs indexed. {REMOTE_CODE_NOTE}",
                elem_id="model-info",
            )
        outputs = [status, plot, measurements, predictions, method, description, caption, similar]
        # As many analyses at once as there are workers; the rest wait in Gradio's queue.
        upload_button.click(actions.analyse_upload, inputs=upload, outputs=outputs, concurrency_limit=workers)
        sample.input(actions.analyse_sample, inputs=sample, outputs=outputs, concurrency_limit=workers)
    demo.queue(max_size=64)
    demo.worker_pids = pool.pids  # for benchmarks and tests that measure the server's memory
    return demo


def launch_options() -> dict:
    """`Blocks.launch` keywords: the page's look, and the upload limits per file, per request and per address."""
    hourly = int(float(os.environ.get("ESI_UPLOAD_HOURLY_MB", "200")) * 2**20)
    quota = Middleware(UploadQuota, per_request_bytes=MAX_UPLOAD_BYTES, per_client_bytes=hourly)
    # show_error: a request Gradio itself refuses (a forged file path that was never uploaded) says why; the
    # page's own handlers turn every other failure into a sentence before Gradio sees it.
    return {
        "theme": THEME,
        "css": CSS,
        "max_file_size": MAX_UPLOAD_BYTES,
        "app_kwargs": {"middleware": [quota]},
        "show_error": True,
    }


def launch(demo: gr.Blocks) -> None:
    """Serve the page with the upload limits; uploads and workers go when the server stops."""
    exit_cleanly_on_sigterm()
    demo.launch(**launch_options())


def default_model() -> Path:
    """The released encoder (trained on the patient-disjoint pool) when present, else the demo's model."""
    return RELEASED_ENCODER_DIR if (RELEASED_ENCODER_DIR / "config.json").is_file() else DEMO_MODEL


def build_app_from_env(model: str | None = None, samples: str | None = None, cache: str | None = None) -> gr.Blocks:
    """The page for a model folder or a Hub repo id at a pinned commit, a sample folder and a cache folder.

    Each defaults to $ESI_MODEL, $ESI_SAMPLES and $ESI_CACHE; the model else to the released encoder when the
    repository has it, else to `make demo`'s model.
    """
    return build_app(
        resolve_model_dir(model or os.environ.get("ESI_MODEL") or default_model()),
        Path(samples or os.environ.get("ESI_SAMPLES", DEFAULT_SAMPLES)),
        Path(cache or os.environ.get("ESI_CACHE", DEFAULT_CACHE)),
    )
