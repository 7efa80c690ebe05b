"""Faces: thin layers that parse input, call the core (common/, nas/) and present its answers."""

import sys

# how the `krx` face starts itself as a process of its own (the daily cycle's steps, the demo's steps)
KRX = (sys.executable, "-m", "faces.cli")
