#!/bin/bash
# `zkServer.sh status`, as the compose file's healthcheck calls it: succeeds when the
# server answers `srvr` on port 2181.
[[ ${1:-} == status ]] || { echo "stand-in: only 'status' is supported" >&2; exit 2; }
exec 3<>/dev/tcp/127.0.0.1/2181 || exit 1
printf srvr >&3
grep -q '^Mode: standalone' <&3
