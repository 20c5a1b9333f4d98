"""Loop Farm: rules -> labelled MIDI templates -> rendered loops -> a SQLite loop catalog."""

__version__ = "0.1.0"
