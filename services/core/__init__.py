"""The foundation every other package may import (and which imports none of them): the error
tree, logging with secret redaction, configuration, Intuit's published limits, QBO time parsing,
backoff, the worker loop.

    errors    QBSyncError and its tree; every failure qbsync reports is one of these
    logs      setup_logging, register_secret/redact, the PM2-style formatter
    config    Settings, load_settings (environment + .env)
    limits    Intuit's limits (page size, CDC cap and look-back, rate and concurrency), written once
    qbotime   parse_qbo_time: Intuit's timestamps as aware datetimes
    durations span/relative: the operator's shorthand for a duration (45s, 12m, 3h02m, 9d)
    retry     backoff_delay, parse_retry_after: the one backoff rule
    worker    run_worker, Stop: PM2 semantics under supervisord
"""
