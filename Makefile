# Install daxd the way a package would: `make install` (DESTDIR= and PREFIX= respected).
PREFIX ?= /usr
DESTDIR ?=
PYTHON ?= python3
BINDIR ?= $(PREFIX)/bin
DOCDIR ?= $(PREFIX)/share/doc/daxd
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
UDEVRULESDIR ?= $(PREFIX)/lib/udev/rules.d
DBUSPOLICYDIR ?= $(PREFIX)/share/dbus-1/system.d
DBUSINTERFACESDIR ?= $(PREFIX)/share/dbus-1/interfaces
SYSCONFDIR ?= /etc
MODPROBE ?= /sbin/modprobe
BUSCTL ?= /usr/bin/busctl
# Debian's pip refuses to touch the system environment without this (PEP 668).
PIP_FLAGS ?= --no-deps --no-build-isolation --no-warn-script-location --break-system-packages

DBUS_INTERFACES = org.daxd.Daxd1.Manager.xml org.daxd.Daxd1.Device.xml org.daxd.Daxd1.Region.xml

.PHONY: all install install-python install-data uninstall test demo FORCE
all: build/daxd.service build/interfaces

# The D-Bus interface files, from the code that exports the interfaces (daxd/service/dbus_xml.py;
# needs dbus-fast; packaging/debian/rules and the RPM spec use it too).
build/interfaces: FORCE
	mkdir -p build
	$(PYTHON) -m daxd.service.dbus_xml $@.tmp >/dev/null
	rm -rf $@ && mv $@.tmp $@

# The unit with this installation's paths (packaging/debian/rules uses it too).
build/daxd.service: units/daxd.service.in FORCE
	mkdir -p build
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
	  -e 's|@MODPROBE@|$(MODPROBE)|g' -e 's|@BUSCTL@|$(BUSCTL)|g' $< > $@.tmp
	@if grep -n '@[A-Z_]*@' $@.tmp; then echo "unsubstituted placeholder in $<" >&2; exit 1; fi
	mv $@.tmp $@

install: install-python install-data

# Debian's pip maps --prefix=/usr to /usr/local unless told it installs for the system.
install-python:
	DEB_PYTHON_INSTALL_LAYOUT=deb_system $(PYTHON) -m pip install $(PIP_FLAGS) --root=$(if $(DESTDIR),$(DESTDIR),/) --prefix=$(PREFIX) .

install-data: build/daxd.service build/interfaces
	install -d $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(UDEVRULESDIR) $(DESTDIR)$(DBUSPOLICYDIR) \
	  $(DESTDIR)$(DBUSINTERFACESDIR) $(DESTDIR)$(SYSCONFDIR)/daxd/policy.d $(DESTDIR)$(DOCDIR)
	install -m 0644 build/daxd.service $(DESTDIR)$(SYSTEMDUNITDIR)/daxd.service
	install -m 0644 udev-rules/90-daxd.rules $(DESTDIR)$(UDEVRULESDIR)/90-daxd.rules
	install -m 0644 etc/dbus-1/system.d/org.daxd.Daxd1.conf $(DESTDIR)$(DBUSPOLICYDIR)/
	install -m 0644 $(addprefix build/interfaces/,$(DBUS_INTERFACES)) $(DESTDIR)$(DBUSINTERFACESDIR)/
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	# Never overwrite the operator's policy.
	test -e $(DESTDIR)$(SYSCONFDIR)/daxd/policy.yaml || \
	  install -m 0644 etc/daxd/policy.yaml $(DESTDIR)$(SYSCONFDIR)/daxd/policy.yaml

uninstall:
	$(PYTHON) -m pip uninstall -y --break-system-packages daxd || true
	rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/daxd.service $(DESTDIR)$(UDEVRULESDIR)/90-daxd.rules \
	  $(DESTDIR)$(DBUSPOLICYDIR)/org.daxd.Daxd1.conf \
	  $(addprefix $(DESTDIR)$(DBUSINTERFACESDIR)/,$(DBUS_INTERFACES))
	rm -rf $(DESTDIR)$(DOCDIR)

test:
	./scripts/test

demo:
	./scripts/demo
