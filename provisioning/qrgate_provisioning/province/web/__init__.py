"""The province's dashboard: server-rendered pages (FastAPI, Jinja2), live by server-sent events, log-in with roles.

Rooms:
    context         what the pages work on: the config, the database, the registry, the live fleet, the accounts
    app             ``create_app(context)``: the routes, the security headers, the error pages
    auth            the session cookie, the CSRF check on every POST, ``require(*roles)``, the audit call path
    i18n            every label in Vietnamese and English
    render          the Jinja2 environment (autoescaped, strict) and the page frame
    format          numbers, sizes, times and ages as each language writes them
    fleet_rows      the fleet table's rows, as an operator reads them (shared by the page and its live updates)
    pages_*         the pages: fleet and alerts, a place, the reports, log-in and the audit log
    server          uvicorn serving the app (``qrgate-province serve``, or a thread in a test)
    templates/      the pages' HTML; static/ the one stylesheet and the one small script (no build, no CDN)
"""
