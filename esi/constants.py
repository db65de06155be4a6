"""Domain constants shared by every part of `esi`, each defined once.

The lead order and the name-based lead mapping live in `modeling_esi.leads` (the remote code that ships with a
model must carry them; that module is plain Python, so importing this one never imports torch); this module
re-exports them for the rest of the package.
"""

from pathlib import Path

from modeling_esi.leads import PTBXL_LEAD_ORDER, map_leads_by_name

# The 12 standard leads in PTB-XL order (I, II, III, aVR, aVL, aVF, V1-V6); other sources map by name.
STANDARD_LEADS: tuple[str, ...] = tuple(PTBXL_LEAD_ORDER)

# The two rates PTB-XL stores every record at (records100/, records500/).
PTBXL_SAMPLING_RATES: tuple[int, ...] = (100, 500)

# PTB-XL codes every age above 89 as 300 (de-identification under HIPAA's safe harbour rule).
PTBXL_AGE_OVER_89 = 300

# PTB-XL's label tasks (the benchmark's statement groupings), in one order for every caller.
TASKS: tuple[str, ...] = ("superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all")

# What every user-facing output (reports, the app, cards) says about the software, in these words.
DISCLAIMER = "Research software, not a diagnostic device."

# Shortest record the software measures or accepts (seconds): below two beats at 60 bpm no interval is measured.
MIN_SECONDS = 2.0

# The repository's encoder release (`esi-export-encoder`): the checkpoint beside its Hub card. Relative to the
# repository root, where `make demo`, `esi-app` and a Space run.
RELEASED_ENCODER_DIR = Path("model_cards") / "esi-ecg-encoder"

__all__ = [
    "DISCLAIMER",
    "MIN_SECONDS",
    "PTBXL_AGE_OVER_89",
    "PTBXL_SAMPLING_RATES",
    "RELEASED_ENCODER_DIR",
    "STANDARD_LEADS",
    "TASKS",
    "map_leads_by_name",
]
