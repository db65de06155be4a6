"""Prepare a PTB-XL folder as a datasets folder; see `esi.data.prepare_ptbxl` (installed as `esi-prepare`)."""

from esi.data.prepare_ptbxl import main

if __name__ == "__main__":
    main()
