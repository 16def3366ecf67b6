#!/usr/bin/env bash
# The Debian packages the tests need besides PyPI's: a real DNS server (bind9), dig
# (dnsutils), ip (iproute2, for the network-namespace tests), nft (nftables, for their NAT
# router) and Prometheus with promtool (prometheus, for the rules' tests and the telemetry
# end-to-end test). Installed with apt-get when running as root (as CI does); otherwise the
# missing ones are named and make stops.
set -euo pipefail
need=()
[ -x /usr/sbin/named ] || need+=(bind9)
command -v dig >/dev/null || need+=(dnsutils)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)
{ command -v prometheus && command -v promtool; } >/dev/null || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "the tests need these Debian packages: ${need[*]}" >&2
    echo "install them (sudo apt-get install ${need[*]}) or run make test as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${need[@]}" \
    || { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; }
