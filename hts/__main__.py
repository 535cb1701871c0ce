import sys

from hts.cli import main

sys.exit(main())
