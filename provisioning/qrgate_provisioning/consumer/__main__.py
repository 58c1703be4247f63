"""``python -m qrgate_provisioning.consumer``: the same as ``qrgate-issuer consumer`` (docs/mqtt.md)."""

import sys

from ..commands.consumer import main

sys.exit(main())
