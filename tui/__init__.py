"""The Textual console (`qbsync tui`): the only package that imports textual.

`tui.app` holds the App (QBSyncApp, the overview) and `cmd_tui`; `tui.entities` the detail of
every entity of a company; `tui.cells` the pure cell formatting both share; `tui.logtail` the
offset-based log tail. All data comes from `db.readmodel`, shared with `qbsync status`.
"""

__all__ = ["app", "cells", "entities", "logtail"]
