"""``python -m training.galw``: the training command, which delegates to ``training.train.main``
(parsing into a ``training.run_config.RunConfig``, then ``training.pipeline`` runs it).

It exists only as this entry point: the product documents the command under this name (README,
docs, the Docker image, the ``training.command`` of model cards, and the ``--resume`` hint a
stopped run prints), so it stays. It is not the ``galw`` package, which holds the method itself
and knows nothing of person search; ``python -m training.train`` is the same command.
"""

import sys

from training.train import main

if __name__ == "__main__":
    sys.exit(main())
