"""The `daxd` command line."""
