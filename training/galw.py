"""``python -m training.galw``: the training command (its code lives in ``training.train``).

Kept under this name because the README, the Docker image and existing runs' resume hints use
it; ``python -m training.train`` is the same command.
"""

import sys

from training.train import main

if __name__ == "__main__":
    sys.exit(main())
