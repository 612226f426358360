"""The Textual console (`qbsync tui`): the only package that imports textual."""
