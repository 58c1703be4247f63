"""What runs beside a gate, never on one: the demo (``qrgate demo``) and its terminal view, the benchmarks
(``qrgate bench``) and the private loopback Mosquitto the demo and the tests start.

A package of its own, beside the province's and outside the gate's (``qrgate``), because it uses both: the
gate imports nothing of it but ``commands/demo.py`` and ``commands/bench.py``, which load it when their
subcommand runs. They need the ``tools`` extra (``pip install 'qrgate[tools]'``: rich for the terminal view),
and the demo and two benchmarks mint passes and signed lists with the province's side
(``qrgate_provisioning``), which the gate itself never imports.
"""
