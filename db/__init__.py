"""Database layer: connections, migrations, upserts and the read models the fronts share.

Never imports textual; the console, `qbsync status` and the workers all read through here.
"""

__all__ = ["connection", "migrate", "embedded", "errorlog"]
