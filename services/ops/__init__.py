"""Operator tools: what an operator runs or reads to see and mend the fleet.

    status          `qbsync status [--json]` and the health rules the console shares
    doctor          `qbsync doctor`: configuration, database, Intuit, supervisord checks
    supervisor_rpc  supervisord's XML-RPC over its unix socket (states, restarts)
    dbcmd           `qbsync db upgrade`
"""
