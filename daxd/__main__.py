import sys

from daxd.cli.main import main

sys.exit(main())
