"""``python -m napari_labelfx``: the ``labelfx`` command line."""
import sys

from napari_labelfx.cli import main

if __name__ == "__main__":
    sys.exit(main())
