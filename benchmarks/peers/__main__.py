"""``python -m benchmarks.peers --out DIR [--quick] ...`` (from the repository root)."""

import sys

from benchmarks.peers.run import main

sys.exit(main())
