"""Downstream evaluation of an ESI model; see `esi.eval.cli`.

The same as the installed `esi-*` command; kept so `python finetune.py --help` works from a checkout.
"""

from esi.eval.cli import main

if __name__ == "__main__":
    main()
