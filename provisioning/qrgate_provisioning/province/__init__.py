"""The province's operations service (issues 14 and 15), on the consumer's PostgreSQL store. Command:
``qrgate-province`` (``cli``); docs/operators.md is the operators' guide.

Rooms:
    settings          the service's TOML file (strict pydantic, errors with the line), one section per component
    db                the PostgreSQL pool and the one migration over every room's ``SCHEMA``
    registry          places and gates (registry_csv: the CSV import; opening_hours: when a place is open)
    fleet             the live state of every gate from MQTT (pure; fleet_record: one gate's view);
                      fleet_listener feeds it from the broker and says hello; presence keeps the transitions
    alerts, metrics   pure rules over the fleet; the Prometheus collector
    queries           a place's page: per hour and direction, people inside, anti-passback flags
    report*           the daily report: figures (report_figures), store, CSV, PDF in Vietnamese, retained message
    accounts          people: roles, argon2 hashes, sessions, the audit log
    web/              the dashboard (FastAPI, server-rendered Jinja2, live by server-sent events), /metrics
    trace             every visit of a pass and who else was there (tracer role, audited)
    export*           batches of check-ins to the national system over HTTPS, resumable, never twice as new
    retention         purging check-ins older than the retention period
    command_signing   operator keys and signed commands to gates (command_sender: MQTT 5 request/response)
    simulate*         the load generator: thousands of simulated gates on a real broker
    commands/         one module per ``qrgate-province`` subcommand, imported when the parser is built
"""
