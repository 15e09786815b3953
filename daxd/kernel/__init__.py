"""What the kernel tells: sysfs access and the observed state of DAX devices and memory blocks."""
