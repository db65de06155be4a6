"""Downstream evaluation of an ESI model; see `esi.eval.finetune`.

The same as the installed `esi-*` command; kept so `python finetune.py --help` works from a checkout.
"""

from esi.eval.finetune import main

if __name__ == "__main__":
    main()
