#!/bin/sh
# Guest, as root: set the hostname. (What Vagrant's `vm.hostname` does on Debian, without the
# networkd restart and the hostnamed start-up, which cost half a minute per machine under TCG.)
#   hostname.sh NAME
set -eu
NAME=${1:?usage: $0 NAME}
echo "$NAME" >/etc/hostname
hostname "$NAME"
sed -i '/^127\.0\.1\.1[[:space:]]/d' /etc/hosts
printf '127.0.1.1\t%s\n' "$NAME" >>/etc/hosts
