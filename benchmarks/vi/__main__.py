"""``python -m benchmarks.vi --out DIR [--quick]``: see :mod:`benchmarks.vi.run`."""

from benchmarks.vi.run import main

if __name__ == "__main__":
  main()
