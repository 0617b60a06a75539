"""``python -m benchmarks.bench --out DIR [--quick] [--overwrite]`` (from the repository root)."""

import sys

from benchmarks.bench.run import main

sys.exit(main())
