"""`esi-app`: the demo page, served (see `esi.app.ui`). Research software, not a diagnostic device."""

from __future__ import annotations

from dataclasses import dataclass, field

from esi.command_line import parse_command_line
from esi.extras import require_extra


@dataclass
class AppArguments:
    """The model, the sample records and the embedding cache the page serves."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "model folder, or Hub repo id at a pinned commit (org/name@<commit hash>); its modeling code "
            "runs, so name only a model you trust (default: $ESI_MODEL, else the released encoder in model_cards/ "
            "when the repository has it, else the demo's model)"
        },
    )
    samples: str | None = field(
        default=None, metadata={"help": "PTB-XL-layout sample folder (default: $ESI_SAMPLES, else data/ptbxl_sample)"}
    )
    cache: str | None = field(
        default=None, metadata={"help": "where sample embeddings are cached (default: $ESI_CACHE)"}
    )


def main(argv: list[str] | None = None) -> None:
    """Build the page and serve it (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose the address)."""
    (args,) = parse_command_line((AppArguments,), argv, __doc__)
    require_extra("esi-app", "app")
    from esi.app.ui import build_app_from_env, launch  # gradio: imported once the arguments are valid

    launch(build_app_from_env(args.model, args.samples, args.cache))


if __name__ == "__main__":
    main()
