#!/bin/sh
# Runs every scenario here with a packetdrill built elsewhere (see README.md):
#   tools/packetdrill/run.sh /path/to/packetdrill [target/release/libustack_preload.so]
set -u
packetdrill=${1:?usage: run.sh PACKETDRILL [LIBRARY]}
library=${2:-target/release/libustack_preload.so}
here=$(dirname "$0")
status=0
for script in "$here"/*.pkt; do
    if "$packetdrill" --so_filename="$library" --local_ip=10.0.0.1 --remote_ip=10.0.0.2 "$script"; then
        echo "pass  $script"
    else
        echo "FAIL  $script"
        status=1
    fi
done
exit $status
