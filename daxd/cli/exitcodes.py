"""Exit codes of the `daxd` command (documented in docs/cli.md)."""

OK = 0  # done: valid policy / every device matches, is unmanaged or ignored
POLICY_INVALID = 1  # the policy has errors (printed as FILE:LINE:COL)
USAGE = 2  # bad command line (argparse also uses 2)
FAILED = 3  # apply: a device could not be brought to its rule (partial outcomes reported)
REFUSED = 4  # apply: nothing failed, but a rule was not applied because it would be unsafe
ENVIRONMENT = 5  # not a sysfs tree, sysfs unreadable, legacy device model, not root, ...
BUSY = 6  # apply: another writer (a daxd apply, a daemon off D-Bus) held the lock too long
INTERRUPTED = 130
