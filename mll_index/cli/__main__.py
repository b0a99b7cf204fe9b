"""`python -m mll_index.cli`: the same command line as `mll-index`."""

from mll_index.cli import main

if __name__ == "__main__":
    main()
