"""Pretrain an ESI model (contrastive + captioning loss); see `esi.train.cli`.

The same as the installed `esi-*` command; kept so `python train.py --help` works from a checkout.
"""

from esi.train.cli import main

if __name__ == "__main__":
    main()
