#!/bin/sh
# Runs every scenario here, over IPv4 and over IPv6, with a packetdrill built elsewhere
# (see README.md):
#   tools/packetdrill/run.sh /path/to/packetdrill [target/release/libustack_preload.so]
set -u
packetdrill=${1:?usage: run.sh PACKETDRILL [LIBRARY]}
library=${2:-target/release/libustack_preload.so}
here=$(dirname "$0")
status=0
for script in "$here"/*.pkt; do
    # The scripts expect an MSS of 1460: IPv6's 20 more header bytes need an MTU of 1520.
    for family in ipv4 ipv6; do
        case $family in
            ipv4) set -- --local_ip=10.0.0.1 --remote_ip=10.0.0.2 ;;
            ipv6) set -- --ip_version=ipv6 --local_ip=fd00::1 --remote_ip=fd00::2 "--so_flags=addr=fd00::1/64 mtu=1520" ;;
        esac
        if "$packetdrill" --so_filename="$library" "$@" "$script"; then
            echo "pass  $family  $script"
        else
            echo "FAIL  $family  $script"
            status=1
        fi
    done
done
exit $status
