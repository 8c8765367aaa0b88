"""The background worker: a loop that runs every job once per cycle, safe on every replica."""
