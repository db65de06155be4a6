"""`esi-app`: the demo page, served (see `esi.app.ui`). Research software, not a medical device."""

from __future__ import annotations

import argparse

from esi.extras import require_extra


def main(argv: list[str] | None = None) -> None:
    """Build the page and serve it (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose the address)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model",
        help="model folder, or Hub repo id at a pinned commit (org/name@<commit hash>); its modeling code runs, so "
        "name only a model you trust (default: $ESI_MODEL, else the released encoder in model_cards/ when the "
        "repository has it, else the demo's model)",
    )
    parser.add_argument("--samples", help="PTB-XL-layout sample folder (default: $ESI_SAMPLES, else data/ptbxl_sample)")
    parser.add_argument("--cache", help="where sample embeddings are cached (default: $ESI_CACHE)")
    args = parser.parse_args(argv)
    require_extra("esi-app", "app")
    from esi.app.ui import build_app_from_env, launch  # gradio: imported once the arguments are valid

    launch(build_app_from_env(args.model, args.samples, args.cache))


if __name__ == "__main__":
    main()
