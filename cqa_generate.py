"""Write CQA captions for a prepared dataset; see `esi.cqa.cli`.

The same as the installed `esi-*` command; kept so `python cqa_generate.py --help` works from a checkout.
"""

from esi.cqa.cli import main

if __name__ == "__main__":
    main()
