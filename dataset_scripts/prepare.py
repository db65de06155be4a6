"""Prepare any supported ECG source as a datasets folder; see `esi.data.cli` (installed as `esi-prepare`)."""

from esi.data.cli import main

if __name__ == "__main__":
    main()
