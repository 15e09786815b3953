"""The policy language: YAML documents loaded into validated rules, CXL regions and layouts (see
docs/policy.md)."""

from daxd.policy.errors import Diagnostic, PolicyError
from daxd.policy.layouts import Fitted, Layout, LayoutDevice, LayoutSize, SizeKind, fit
from daxd.policy.load import check_policy, load_policy
from daxd.policy.model import Mode, Policy, Rule, Zone
from daxd.policy.regions import CxlRegionSpec, MemdevRef
from daxd.policy.selectors import Selector

__all__ = [
    "CxlRegionSpec",
    "Diagnostic",
    "Fitted",
    "Layout",
    "LayoutDevice",
    "LayoutSize",
    "MemdevRef",
    "Mode",
    "Policy",
    "PolicyError",
    "Rule",
    "Selector",
    "SizeKind",
    "Zone",
    "check_policy",
    "fit",
    "load_policy",
]
