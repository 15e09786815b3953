"""The long-running service: udev events, systemd notification and the D-Bus API."""
