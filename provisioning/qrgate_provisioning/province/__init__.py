"""The province's operations service: the registry of places and gates, the live fleet, the dashboard, the 06:00
daily report (issue 14), on the consumer's PostgreSQL store. Command: ``qrgate-province`` (``cli``).

Rooms:
    settings        the service's TOML file (strict pydantic, errors with the line), one section per component
    db              the PostgreSQL connection and the schema every room adds its tables to
    registry        places and gates: CSV import, edits (what "not complying" is computed against)
    fleet           the live state of every gate from MQTT (pure model); fleet_listener feeds it from the broker
    presence        online/offline transitions kept in PostgreSQL (the report's "offline N hours")
    alerts          pure rules over the fleet: offline, stale trust list, clock, backlog, rejections, disk
    report*         the daily report: figures, CSV, PDF (Vietnamese), retained MQTT message
    accounts        people: roles, hashed passwords, sessions, the audit log
    web/            the dashboard (FastAPI, server-rendered, live by server-sent events), /metrics
    commands/       one module per ``qrgate-province`` subcommand, imported lazily
"""
