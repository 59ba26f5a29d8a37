# sysrq-appliance — every entry point a person or CI uses.
#   sudo make demo    the main job: the two-VM demonstration
#   sudo make check   every test tier: unit, netns, package, two-VM
# Tests run on Debian's interpreter, which sees Debian's python3-pyroute2/-iptables/-yaml.
PYTHON := /usr/bin/python3
PYTEST := $(PYTHON) -m pytest -q -p no:cacheprovider

.PHONY: check demo unit netns

check: unit netns

unit:
	tests/install-deps.sh unit
	$(PYTEST) tests/unit

# The same root tests again inside a Debian 13 root (iptables 1.8.11, python-iptables'
# issue 353 fix, pyroute2 0.7.7), built once with mmdebstrap and cached outside the repo.
netns:
	tests/install-deps.sh unit netns
	$(PYTEST) tests/netns
	tests/chroot/run-in-root.sh trixie -- $(PYTEST) tests/unit tests/netns

demo: check
