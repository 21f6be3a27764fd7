"""Allow `python -m genlab`."""
import sys

from genlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
