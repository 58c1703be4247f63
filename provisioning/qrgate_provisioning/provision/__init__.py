"""Provisioning gates: the site's device CA (device_ca), its registry and audit log, and the SSH provisioner."""
