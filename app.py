"""Hugging Face Space entry file: the ESI demo page (see `esi.app.ui`). Research software, not a medical device.

python app.py      # or `esi-app`; ESI_MODEL, ESI_SAMPLES and ESI_CACHE choose model, samples and cache
"""

from esi.app.ui import build_app_from_env, launch

demo = build_app_from_env()  # Spaces import this module and serve `demo`

if __name__ == "__main__":
    launch(demo)
