import sys

from galw.cli import main

sys.exit(main())
