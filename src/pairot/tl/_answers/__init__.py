"""Reads the answers out of a solution: uses the engine's public entry points, not its internals."""
