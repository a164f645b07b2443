#!/bin/sh
# Selection by the client's real address behind a PROXY-protocol load balancer: regions from a
# [[region]] table and from a MaxMind country database the test builds, min-region-servers
# falling back, the per-client rate limit on the claimed address (broker) and on the time
# source, and connections without a header refused. ke-client plays the load balancer: it sends
# a PROXY v1 header claiming documentation addresses, from 127.0.0.1, which the broker trusts.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init pool-select
plan 21

pool_certs || bail_out "gen-cert.sh failed"
make_cert c --ip 127.0.0.4 || bail_out "gen-cert.sh failed"
perl "$TOP_SRCDIR/tests/tools/make-geoip-db.pl" "$T/country.mmdb" >"$T/mmdb.log" 2>&1 ||
	bail_out "make-geoip-db.pl failed: $(cat "$T/mmdb.log")"
alloc_ports 11
KEA=$PORT1 NTPA=$PORT2 SA=$PORT3
KEB=$PORT4 NTPB=$PORT5 SB=$PORT6
KEC=$PORT7 NTPC=$PORT8 SC=$PORT9
PK=$PORT10 PS=$PORT11
C="$T/certs"

# A limits plain key exchanges hard; the broker's requests to it are a pool's and never limited.
SOURCE_KE_EXTRA='rate-limit-per-second = 0.001
rate-limit-burst = 2' source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" ||
	bail_out "time source A did not start"
source_start b 127.0.0.3 "$KEB" "$NTPB" "$SB" || bail_out "time source B did not start"
source_start c 127.0.0.4 "$KEC" "$NTPC" "$SC" || bail_out "time source C did not start"

# select_conf MIN: the broker's configuration with min-region-servers = MIN.
select_conf() {
	pool_conf "$T/pool.toml" "$PK" "$PS" \
		"$(upstream 127.0.0.2 "$KEA" 1 'regions = ["LAB"]'), $(upstream 127.0.0.3 "$KEB" 1 'regions = ["de", "eu"]'), $(upstream 127.0.0.4 "$KEC" 1 'regions = ["us"]')" \
		"deep-check-interval-s = 0
proxy-protocol = true
proxy-protocol-from = [\"127.0.0.1/32\"]
geoip-database-path = \"$T/country.mmdb\"
min-region-servers = $1
rate-limit-per-second = 0.001
rate-limit-burst = 3

[[region]]
name = \"lab\"
prefixes = [\"203.0.113.200/29\", \"2001:db8:9::/48\"]"
}
select_conf 1
pool_start p "$T/pool.toml" "127.0.0.1:$PS" || bail_out "nts-pool-ke did not start"
if wait_upstream p 127.0.0.2 "$KEA" healthy 30 && wait_upstream p 127.0.0.3 "$KEB" healthy 30 &&
	wait_upstream p 127.0.0.4 "$KEC" healthy 30; then
	ok "broker: three upstreams healthy, behind PROXY, with a country database"
else
	bail_out "the upstreams did not become healthy"
fi

# from CLIENT N: N key exchanges claiming CLIENT (IP:PORT); sets SERVERS to the sorted, distinct
# Server records answered (or "error-N" / "failed"), and LAST.
from() {
	f_client=$1
	f_i=0
	f_all=""
	while [ "$f_i" -lt "$2" ]; do
		LAST=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" --proxy "$f_client" \
			2>&1) || true
		f_err=$(jget error "$LAST")
		f_srv=$(jget server "$LAST")
		if [ "$f_err" != missing ] && [ "$f_err" != null ]; then
			f_srv="error-$f_err"
		elif [ "$(jget cookies "$LAST")" != 8 ]; then
			f_srv=failed
		fi
		f_all="$f_all $f_srv"
		f_i=$((f_i + 1))
	done
	SERVERS=$(printf '%s\n' $f_all | sort -u | tr '\n' ' ' | sed 's/ $//')
}

from 192.0.2.5:5000 3
expect "client in DE (database): served by B, the one upstream for \"de\"" "$SERVERS" 127.0.0.3 \
	"$LAST"
from 198.51.100.7:5000 3
expect "client in US (database): served by C" "$SERVERS" 127.0.0.4 "$LAST"
from 203.0.113.201:5000 3
expect "client in the [[region]] lab prefix: served by A (regions = [\"LAB\"])" "$SERVERS" \
	127.0.0.2 "$LAST"

doc=$(status_of p)
last_client=$(jget recent_sessions.-1.client "$doc")
expect "status: the last session's client is the claimed address" "$last_client" \
	"203.0.113.201:5000" "$(printf %.600s "$doc")"
expect "status: the last session came via 127.0.0.1, in region lab, completed" \
	"$(jget recent_sessions.-1.via "$doc" | cut -d: -f1) $(jget recent_sessions.-1.region "$doc") $(jget recent_sessions.-1.outcome "$doc")" \
	"127.0.0.1 lab completed" "$(printf %.600s "$doc")"

# Unknown to the table and the database: every upstream serves it (the global level).
seen=""
for host in 170 171 172 173 174 175; do
	from "203.0.113.$host:6000" 1
	seen="$seen $SERVERS"
done
expect "unknown client: the global level, all three upstreams" \
	"$(printf '%s\n' $seen | sort -u | tr '\n' ' ')" "127.0.0.2 127.0.0.3 127.0.0.4 " "$seen"

# min-region-servers 2: "de" and "eu" have one upstream each, so a DE client falls back to all.
select_conf 2
kill -HUP "$p_pid"
wait_until 10 sh -c "'$TOOLS/http-get' 127.0.0.1:$PS /status | grep -q '\"min_region_servers\": *2'" ||
	diag "the reload did not show min_region_servers 2"
seen=""
for host in 10 11 12 13 14 15; do
	from "192.0.2.$host:7000" 1
	seen="$seen $SERVERS"
done
expect "min-region-servers 2 after SIGHUP: the DE client falls back to every upstream" \
	"$(printf '%s\n' $seen | sort -u | tr '\n' ' ')" "127.0.0.2 127.0.0.3 127.0.0.4 " "$seen"

# The rate limit counts the claimed address (its port aside): burst 3, then Error 2; another
# client is unaffected. (Each earlier client made at most 3 key exchanges.)
served() {
	case $SERVERS in
	*error* | *failed* | "") echo no ;;
	*) echo yes ;;
	esac
}
from 198.51.100.50:1000 3
expect "rate limit: 3 key exchanges of one client within its burst are served" "$(served)" yes \
	"$LAST"
from 198.51.100.50:1001 1
expect "rate limit: the 4th gets Error 2 at once" "$SERVERS" error-2 "$LAST"
from 198.51.100.51:1000 1
expect "rate limit: a client of another address is still served" "$(served)" yes "$LAST"
expect "status: sessions.rate_limited counts it, and only it" "$(stat_of p sessions.rate_limited)" 1 \
	"$(printf %.400s "$(status_of p)")"

# A connection without a header is refused before TLS, and counted.
before=$(stat_of p limits.refused_proxy_header)
out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" --timeout 3000 2>&1) || true
expect "no PROXY header: no handshake" "$(jget handshake "$out")" failed "$out"
wait_until 5 sh -c "[ \"\$('$TOOLS/http-get' 127.0.0.1:$PS /status | '$TOOLS/json-get' limits.refused_proxy_header)\" -gt $before ]" ||
	true
expect_gt "status: limits.refused_proxy_header grows" \
	"$(stat_of p limits.refused_proxy_header)" "$before"

# Time source A: plain key exchanges from one address are limited (burst 2) ...
direct() {
	"$TOOLS/ke-client" --connect "127.0.0.2:$KEA" --ca "$C/ca.pem" 2>&1 || true
}
o1=$(direct)
o2=$(direct)
o3=$(direct)
expect "time source: two plain key exchanges within the burst, the third Error 2" \
	"$(jget cookies "$o1") $(jget cookies "$o2") $(jget error "$o3")" "8 8 2" "$o3"
expect "time source: rate_limited counted" "$(stat_of a nts_ke_servers.0.rate_limited)" 1 \
	"$(printf %.600s "$(status_of a)")"
# ... but the broker's Fixed Key requests, a pool's, never are (back to min-region-servers 1,
# so the lab client goes to A).
select_conf 1
kill -HUP "$p_pid"
wait_until 10 sh -c "'$TOOLS/http-get' 127.0.0.1:$PS /status | grep -q '\"min_region_servers\": *1'" ||
	diag "the reload did not show min_region_servers 1"
from 203.0.113.202:5000 3
expect "time source: the pool's requests are not limited (lab client served by A thrice)" \
	"$SERVERS" 127.0.0.2 "$LAST"

# A reload that changes a key only a restart applies says so, key by key, and /status shows the
# region table that is now in force.
sed -e 's/^rate-limit-burst = 3$/rate-limit-burst = 5/' -e 's/^name = "lab"$/name = "lab2"/' \
	"$T/pool.toml" >"$T/pool2.toml" && mv "$T/pool2.toml" "$T/pool.toml"
kill -HUP "$p_pid"
wait_until 10 sh -c "'$TOOLS/http-get' 127.0.0.1:$PS /status | grep -q '\"lab2\"'" ||
	diag "the reload did not show region lab2"
expect "status after SIGHUP: selection.regions is the new table" \
	"$(stat_of p selection.regions.0)" lab2 "$(printf %.600s "$(status_of p)")"
if grep -q "reload: 'rate-limit-\*' changed; it takes a restart" "$T/p.log"; then
	ok "reload: a changed rate limit is said to take a restart"
else
	not_ok "reload: a changed rate limit is said to take a restart" "$(log_tail "$T/p.log" 10)"
fi
if ! grep -q "reload: 'min-region-servers' changed\|reload: 'regions' changed" "$T/p.log"; then
	ok "reload: keys a reload applies are not warned about"
else
	not_ok "reload: keys a reload applies are not warned about" "$(log_tail "$T/p.log" 10)"
fi

daemon_stop p
expect "broker: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/p.log" 10)"
