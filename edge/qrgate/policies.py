"""The policies a gate's configuration names, read from their files: the CCCD hash key and the baseline validation
rules. Used by the service when it starts and by ``check-config``'s preflight, so both refuse the same files."""

from __future__ import annotations

from pathlib import Path

from .config import GateConfig, RulesConfig
from .errors import ConfigError
from .passes.cccd import CccdPolicy
from .rules.policy import RuleSet, RuleSetError, builtin_rule_set, load_rule_set


def cccd_policy(config: GateConfig) -> CccdPolicy:
    """The CCCD policy with the province's hash key read from its file (which must not be world-readable)."""
    cccd = config.cccd
    if not cccd.enabled:
        return CccdPolicy()
    assert cccd.hash_key_file is not None  # CccdConfig requires it when enabled
    path = Path(cccd.hash_key_file)
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"cccd.hash_key_file {path}: readable by others; chmod 600 it (it keys every ID-number "
                              "hash)")
        key = path.read_bytes().strip()
        return CccdPolicy(enabled=True, hash_key=key)
    except OSError as exc:
        raise ConfigError(f"cccd.hash_key_file {path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"cccd.hash_key_file {path}: {exc}") from None


def baseline_rules(rules: RulesConfig) -> RuleSet | None:
    """The validation rules the configuration names, in force until the province delivers a signed rule set."""
    if rules.baseline == "none":
        return None
    if rules.baseline == "builtin":
        return builtin_rule_set()
    try:
        return load_rule_set(rules.baseline)
    except RuleSetError as exc:
        raise ConfigError(f"rules.baseline: {exc}") from None
