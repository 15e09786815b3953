"""Acting: running plans through sysfs, with read-back and rollback."""
