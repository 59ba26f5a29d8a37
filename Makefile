# sysrq-appliance — every entry point a person or CI uses.
#   make demo    the main job: the two-VM demonstration (as root)
#   make check   every test tier: unit, netns, ansible, real kernel, package, the VM runs (as root;
#                what .ci/run calls)
# Tests run on Debian's interpreter, which sees Debian's python3-pyroute2/-iptables/-yaml.
PYTHON := /usr/bin/python3
PYTEST := $(PYTHON) -m pytest -q -p no:cacheprovider

.PHONY: check demo unit netns ansible realkernel bench bench-guest bench-smoke deb package vagrant scenarios-alone

# Two lanes side by side (two cores here): the host tiers one after another, and the VM runs.
# Every line is tagged [host] or [vm]; the VM runs' own logs are in /var/tmp/sysrq-appliance-vagrant.
check:
	tests/install-deps.sh unit netns package ansible realkernel vagrant
	MAKE="$(MAKE)" tests/lanes.sh 'host: unit netns ansible bench-smoke realkernel package' 'vm: vagrant'

deb:
	tests/install-deps.sh package
	tests/package/build-deb.sh out

package:
	tests/install-deps.sh package
	tests/package/run.sh

# As an unprivileged user (nobody when run as root), as a package build runs it.
unit:
	tests/install-deps.sh unit
	tests/run-unprivileged.sh $(PYTEST) tests/unit

# The Ansible role with Debian's ansible, over the local connection into scratch directories
# (as nobody): modes, no secret in the output, changed=0 the second time, leavers removed.
ansible:
	tests/install-deps.sh ansible
	tests/run-unprivileged.sh $(PYTEST) tests/ansible

# The same root tests again inside a Debian 13 root (iptables 1.8.11, python-iptables'
# issue 353 fix, pyroute2 0.7.7), built once with mmdebstrap and cached outside the repo.
netns:
	tests/install-deps.sh unit netns
	$(PYTEST) tests/netns
	tests/chroot/run-in-root.sh trixie -- $(PYTEST) tests/unit tests/netns

# Debian 13's own kernel and root booted once under QEMU (TCG, no NIC): the tests that need
# real ESP and the real xt_SYSRQ, as root, with zero skips. The image is cached outside the repo.
realkernel:
	tests/install-deps.sh realkernel
	tests/realkernel/run.sh

# The main job: build the .deb and the box (or reuse the cache), bring up sender and target
# under QEMU, run the Debian 13 scenarios, print the table, tear everything down.
demo:
	tests/install-deps.sh vagrant package
	tests/package/build-deb.sh out
	tests/vagrant/run.sh trixie

# The two-VM test: Debian 13 on both; then a Debian 12 admin host in front of a Debian 13
# target (fire and no-fire from Debian 12; a Debian 12 target config is refused there), and
# of a second Debian 13 target: the fleet, rolled out by ansible-playbook (fleet.scn).
vagrant:
	tests/install-deps.sh vagrant package
	tests/package/build-deb.sh out
	tests/vagrant/run.sh trixie
	tests/vagrant/run.sh bookworm

# Every Debian 13 scenario file alone on the provisioned pair (a snapshot reverted between
# files): what the independence of the files rests on (about 40 min here; not part of check).
ALONE := $(shell ls -r tests/vagrant/scenarios/*.scn | grep -Ev '/(isolation|trixie|bookworm|bench|fleet)\.scn$$')
scenarios-alone:
	tests/install-deps.sh vagrant package
	tests/package/build-deb.sh out
	tests/vagrant/run.sh trixie each $(ALONE)

# The benchmarks and drills on this host (bench/README.md has the latest results).
bench:
	tests/install-deps.sh unit netns
	$(PYTHON) bench/send.py --runs 20
	$(PYTHON) bench/apply_scale.py --sizes 1,10,100,1000 --repeat 3
	$(PYTHON) bench/apply_scale.py --sizes 1,10,100,1000 --repeat 3 --role target
	$(PYTHON) bench/crash_drill.py --peers 100 --kills 50
	$(PYTHON) bench/fleet_render.py --targets 1000
	$(PYTHON) bench/send_fleet.py --targets 1000 --wait 1
	$(PYTHON) bench/helper_flood.py --runs 10

# The guest half: apply_scale with SAs, and the flood drill, on the two Debian 13 VMs.
bench-guest:
	tests/install-deps.sh vagrant package
	tests/package/build-deb.sh out
	SCN_TIMEOUT=1800 tests/vagrant/run.sh trixie all tests/vagrant/scenarios/bench.scn

# CI: the same programs, small, to prove they still run (no timing is asserted).
bench-smoke:
	tests/install-deps.sh unit netns
	$(PYTHON) bench/send.py --runs 3
	$(PYTHON) bench/apply_scale.py --sizes 1,10 --repeat 1 --role target
	$(PYTHON) bench/crash_drill.py --peers 10 --kills 4
	$(PYTHON) bench/fleet_render.py --targets 20
	$(PYTHON) bench/send_fleet.py --targets 10 --wait 0.5
	$(PYTHON) bench/helper_flood.py --runs 2
