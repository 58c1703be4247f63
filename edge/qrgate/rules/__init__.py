"""The province's validation rules for DCCs: CertLogic expressions, the rule sets that hold them, the policy."""
