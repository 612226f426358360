"""qbsync services: configuration, the QBO client and OAuth, tokenup, sync, webhook, CLI, emulator.

Never imports textual (only tui/ does).
"""
