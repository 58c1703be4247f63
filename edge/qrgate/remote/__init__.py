"""Commands from the province's operators to this gate (issue 15): authenticated here before anything is done.

``auth`` checks a SignedCommand (wire.py): an operator key this gate trusts signed exactly these bytes, the
command is for this device, inside its validity and not seen before; anything else is refused with a named
outcome (wire.CommandOutcome). ``nonces`` remembers the nonces of accepted commands across restarts until they
expire. ``dispatch`` carries out an authenticated command through the service's small ``CommandTarget``.
"""
