#!/bin/sh
# ntpd-rs configurations run unchanged (doc/ntpd-rs.md): the configuration Debian's ntpd-rs
# package ships validates as it is; ntpd-rs-style configurations of each role validate and
# start, and their [[server]] access rules (denylist, allowlist, rate limiting, require-nts)
# answer as ntpd-rs documents; `ntp-ctl validate` reports every error in file order.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init ntpd-rs-config
plan 19

NTPDRS=$(ntpdrs_find) || bail_out "no ntpd-rs package to read its shipped configuration from"
SHIPPED="$NTPDRS/etc/ntpd-rs/ntp.toml"

ctl_validate "$SHIPPED"
expect "ntp-ctl validate accepts ntpd-rs's shipped ntp.toml unchanged" "$VALIDATE_RC" 0 \
	"$(cat "$T/validate.out")"
grep -q 'mode = "pool"' "$SHIPPED" && grep -q '^observation-path' "$SHIPPED" &&
	grep -q 'forward *= *"inf"' "$SHIPPED" &&
	ok "the shipped file has a pool source, an observation path and an \"inf\" threshold" ||
	not_ok "the shipped file has a pool source, an observation path and an \"inf\" threshold" \
		"$(cat "$SHIPPED")"

make_certs || bail_out "gen-cert.sh failed"
C="$T/certs"
alloc_ports 10
DENY=$PORT1 ALLOW=$PORT2 RATE=$PORT3 NTSONLY=$PORT4 OPEN=$PORT5 SSTATUS=$PORT6
KE=$PORT7 KNTP=$PORT8 KSTATUS=$PORT9 CSTATUS=$PORT10

# ---- The server role: [[server]] with ntpd-rs's access rules -----------------------------------
cat >"$T/server.toml" <<EOF
[[server]]
listen = "127.0.0.2:$DENY"
denylist = { filter = ["127.0.0.1/32"], action = "deny" }

[[server]]
listen = "127.0.0.2:$ALLOW"
allowlist = { filter = ["192.0.2.0/24", "::1/128"], action = "ignore" }

[[server]]
listen = "127.0.0.2:$RATE"
rate-limiting-cache-size = 100
rate-limiting-cutoff-ms = 60000

[[server]]
listen = "127.0.0.2:$NTSONLY"
require-nts = "deny"

[[server]]
listen = "127.0.0.2:$OPEN"

[observability]
log-level = "info"
status-listen = "127.0.0.1:$SSTATUS"

# One worker: the per-client rate limit below is then exact without the table the workers share
# (ntpd-rs-observe.sh checks that table with two).
[daemon]
workers = 1

[synchronization]
local-stratum = 3
single-step-panic-threshold = 1800
startup-step-panic-threshold = { forward = "inf", backward = 86400 }
accumulated-step-panic-threshold = 0
clock-control = false
EOF
ctl_validate "$T/server.toml"
expect "the server role's ntpd-rs-style configuration validates" "$VALIDATE_RC" 0 \
	"$(cat "$T/validate.out")"
daemon_start s "$T/server.toml" "127.0.0.1:$SSTATUS" || bail_out "the server role did not start"
ok "the server role started"

q() { "$TOOLS/ntp-query" "127.0.0.2:$1" 2000; }
r=$(q "$DENY")
expect "denylist with action \"deny\": a DENY kiss (stratum 0, refid DENY)" \
	"$(jget result "$r") $(jget stratum "$r") $(jget refid "$r")" "ok 0 44454e59" "$r"
r=$(q "$ALLOW")
expect "allowlist with action \"ignore\": an outsider gets no answer" "$(jget result "$r")" \
	timeout "$r"
r1=$(q "$RATE")
r2=$(q "$RATE")
expect "rate limiting: the first request is served, the next within the cutoff gets RATE" \
	"$(jget stratum "$r1") $(jget stratum "$r2") $(jget refid "$r2")" "3 0 52415445" "$r1 $r2"
r=$(q "$NTSONLY")
expect "require-nts = \"deny\": a plain request gets a DENY kiss" \
	"$(jget stratum "$r") $(jget refid "$r")" "0 44454e59" "$r"
r=$(q "$OPEN")
expect "a [[server]] without rules serves plain NTP" "$(jget result "$r") $(jget stratum "$r")" \
	"ok 3" "$r"
doc=$(status_of s)
# ntp-query sends up to three datagrams when none is answered: each one is ignored.
ignored=$(jget ntp_servers.1.ignored "$doc")
is_int "$ignored" && [ "$ignored" -ge 1 ] && ignored=counted
expect "/status counts the refusals (denied, ignored, rate_limited)" \
	"$(jget ntp_servers.0.denied "$doc") $ignored $(jget ntp_servers.2.rate_limited "$doc") $(jget ntp_servers.3.denied "$doc")" \
	"1 counted 1 1" "$doc"
m=$("$TOOLS/http-get" "127.0.0.1:$SSTATUS" /metrics 2>&1 || true)
expect "/metrics has ntp_daemon_ntp_rate_limited_total for the rate-limited server" \
	"$(printf '%s\n' "$m" | grep -c "^ntp_daemon_ntp_rate_limited_total{listen=\"127.0.0.2:$RATE\"} 1\$")" \
	1 "$(printf '%s\n' "$m" | grep rate_limited)"

# ---- The NTS-KE server role, its NTP server NTS-only ------------------------------------------
cat >"$T/nts-ke.toml" <<EOF
[[nts-ke-server]]
listen = "127.0.0.2:$KE"
certificate-chain-path = "$C/server-a.chain.pem"
private-key-path = "$C/server-a.key"
key-exchange-timeout-ms = 1000
concurrent-connections = 64
ntp-port = $KNTP

[[server]]
listen = "127.0.0.2:$KNTP"
require-nts = true

[keyset]
key-rotation-interval = 86400
stale-key-count = 7

[observability]
log-level = "info"
status-listen = "127.0.0.1:$KSTATUS"

[synchronization]
local-stratum = 2
clock-control = false
EOF
ctl_validate "$T/nts-ke.toml"
expect "the NTS-KE server role's ntpd-rs-style configuration validates" "$VALIDATE_RC" 0 \
	"$(cat "$T/validate.out")"
daemon_start k "$T/nts-ke.toml" "127.0.0.1:$KSTATUS" || bail_out "the NTS-KE role did not start"
out=$("$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$C/ca.pem" --ntp 2>"$T/kec.err" || true)
expect "NTS-KE then NTS NTP through the require-nts server: authenticated" \
	"$(jget ntp.result "$out")" authenticated "$out" "$(cat "$T/kec.err")"
r=$(q "$KNTP")
expect "require-nts = true: a plain request is dropped" "$(jget result "$r")" timeout "$r"

# ---- The client role: server and nts sources in ntpd-rs's spelling ----------------------------
cat >"$T/client.toml" <<EOF
[source-defaults]
poll-interval-limits = { min = 0, max = 2 }
initial-poll-interval = 0

[[source]]
mode = "server"
address = "127.0.0.2:$OPEN"
ntp-version = "auto"

[[source]]
mode = "nts"
address = "127.0.0.2:$KE"
certificate-authority = "$C/ca.pem"

[observability]
log-level = "debug"
status-listen = "127.0.0.1:$CSTATUS"
ansi-colors = false

[synchronization]
minimum-agreeing-sources = 1
single-step-panic-threshold = { forward = 1000, backward = 1000 }
startup-step-panic-threshold = { forward = "inf", backward = 86400 }
clock-control = false
EOF
ctl_validate "$T/client.toml"
expect "the client role's ntpd-rs-style configuration validates" "$VALIDATE_RC" 0 \
	"$(cat "$T/validate.out")"
daemon_start c "$T/client.toml" "127.0.0.1:$CSTATUS" || bail_out "the client role did not start"
if wait_until 20 working_at_least c 2; then
	ok "the client role's server and nts sources both deliver samples ($WORKING)"
else
	not_ok "the client role's server and nts sources both deliver samples" "$(src_diag c)"
fi

# A pool source in the client role (its start waits for the pool runtime; see doc/ntpd-rs.md).
cat >"$T/client-pool.toml" <<EOF
[[source]]
mode = "pool"
address = "localhost:$OPEN"
count = 2
ignore = ["::1"]

[synchronization]
clock-control = false
EOF
ctl_validate "$T/client-pool.toml"
expect "a pool source with count and ignore validates" "$VALIDATE_RC" 0 "$(cat "$T/validate.out")"

# ---- validate: every error, in file order -----------------------------------------------------
cat >"$T/bad.toml" <<'EOF'
[[source]]
mode = "pool"
address = "192.0.2.1"
count = 99

[[server]]
listen = "127.0.0.2:123"
require-nts = "sometimes"

[synchronization]
startup-step-panic-threshold = { forward = "inf", sideways = 1 }
EOF
ctl_validate "$T/bad.toml"
lines=$(sed -n "s|^$T/bad.toml:\([0-9]*\): .*|\1|p" "$T/validate.out" | tr '\n' ' ')
expect "ntp-ctl validate: exit 1 and each error on its own line, in file order" \
	"$VALIDATE_RC $lines" "1 3 4 8 11 " "$(cat "$T/validate.out")"

daemon_stop c
daemon_stop k
daemon_stop s
expect "every role stops cleanly" "$STOP_RC" 0
