import sys

from tfp_realnvp.cli import main

sys.exit(main())
