"""reidd: a multi-camera vehicle re-identification daemon."""

__version__ = "0.1.0"
