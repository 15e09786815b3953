"""The policy language: YAML documents loaded into validated rules and CXL regions (see
docs/policy.md)."""

from daxd.policy.errors import Diagnostic, PolicyError
from daxd.policy.load import check_policy, load_policy
from daxd.policy.model import Mode, Policy, Rule, Zone
from daxd.policy.regions import CxlRegionSpec, MemdevRef
from daxd.policy.selectors import Selector

__all__ = [
    "CxlRegionSpec",
    "Diagnostic",
    "MemdevRef",
    "Mode",
    "Policy",
    "PolicyError",
    "Rule",
    "Selector",
    "Zone",
    "check_policy",
    "load_policy",
]
