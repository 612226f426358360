"""The Textual console (`qbsync tui`): the only package that imports textual.

`tui.app` holds the App (QBSyncApp) and `cmd_tui`; `tui.logtail` the offset-based log tail.
All data comes from `db.readmodel`, shared with `qbsync status`.
"""

__all__ = ["app", "logtail"]
