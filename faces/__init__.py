"""Faces: thin layers that parse input, call the core (common/, nas/) and present its answers."""
