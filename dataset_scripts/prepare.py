"""Prepare any supported ECG source as a datasets folder; see `esi.data.sources` (installed as `esi-prepare-source`)."""

from esi.data.sources import main

if __name__ == "__main__":
    main()
