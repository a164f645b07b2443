#!/usr/bin/env bash
# Makes a private test CA (once per directory) and leaf certificates signed by it, for the demo
# configurations and the tests. Uses openssl(1) (Debian package "openssl").
set -euo pipefail

prog=${0##*/}
script_dir=$(cd "$(dirname "$0")" && pwd)

usage() {
	cat <<EOF
Usage: $prog [OPTIONS] NAME [--dns NAME]... [--ip ADDRESS]...

Issues a leaf certificate NAME signed by the test CA in DIR, making the CA first if DIR has none.
Options may appear before or after NAME.

  --dir DIR         output directory (default: $script_dir/out)
  --ca-name CN      common name of a CA made by this run (default: "NTS Pool Test CA")
  --days N          validity of the leaf in days, 1..825 (default: 825)
  --ca-days N       validity of a CA made by this run in days, 1..7300 (default: 3650)
  --force-ca        replace an existing CA (its key and certificate) with a new one
  --dns NAME        add a DNS subjectAltName (repeatable)
  --ip ADDRESS      add an IP subjectAltName, IPv4 or IPv6 (repeatable)
  -h, --help        show this help

Without --dns or --ip the leaf gets NAME as its only DNS name.

Files written to DIR (keys are ECDSA P-256, unencrypted, mode 0600):
  ca.key, ca.pem    the CA (made once and reused; never overwritten without --force-ca)
  NAME.key          the leaf's private key
  NAME.pem          the leaf certificate alone (what a server pins as an authorised pool)
  NAME.chain.pem    the leaf followed by the CA certificate (what a server presents)
Re-running for an existing NAME issues a new key and certificate for it.
The leaf carries extendedKeyUsage serverAuth and clientAuth.
EOF
}

die() {
	printf '%s: %s\n' "$prog" "$*" >&2
	exit 1
}

usage_error() {
	printf '%s: %s\n' "$prog" "$*" >&2
	printf "Try '%s --help'.\n" "$prog" >&2
	exit 2
}

is_uint_in() { # value min max
	[[ $1 =~ ^[0-9]{1,6}$ ]] && ((10#$1 >= $2 && 10#$1 <= $3))
}

is_ipv4() {
	local IFS=. octet
	local -a parts
	[[ $1 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
	read -r -a parts <<<"$1"
	for octet in "${parts[@]}"; do
		((10#$octet <= 255)) || return 1
	done
}

# A coarse check: openssl judges the exact IPv6 grammar and rejects what slips through here.
is_ipv6() {
	[[ $1 == *:* && $1 =~ ^[0-9A-Fa-f:.]+$ && ${#1} -le 45 ]]
}

is_dns_name() {
	[[ ${#1} -le 253 && $1 =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$ ]]
}

dir=$script_dir/out
ca_name="NTS Pool Test CA"
days=825
ca_days=3650
force_ca=0
name=
dns=()
ips=()

need_value() { # option remaining-argument-count
	(($2 >= 2)) || usage_error "option $1 needs a value"
}

while (($# > 0)); do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--dir)
		need_value "$1" $#
		dir=$2
		shift 2
		;;
	--ca-name)
		need_value "$1" $#
		ca_name=$2
		shift 2
		;;
	--days)
		need_value "$1" $#
		is_uint_in "$2" 1 825 || usage_error "--days must be an integer from 1 to 825, not '$2'"
		days=$((10#$2))
		shift 2
		;;
	--ca-days)
		need_value "$1" $#
		is_uint_in "$2" 1 7300 || usage_error "--ca-days must be an integer from 1 to 7300, not '$2'"
		ca_days=$((10#$2))
		shift 2
		;;
	--force-ca)
		force_ca=1
		shift
		;;
	--dns)
		need_value "$1" $#
		is_dns_name "$2" || usage_error "--dns: '$2' is not a valid DNS name"
		dns+=("$2")
		shift 2
		;;
	--ip)
		need_value "$1" $#
		is_ipv4 "$2" || is_ipv6 "$2" || usage_error "--ip: '$2' is not an IPv4 or IPv6 address"
		ips+=("$2")
		shift 2
		;;
	--)
		shift
		(($# <= 1)) || usage_error "only one NAME may be given"
		if (($# == 1)); then
			[[ -z $name ]] || usage_error "only one NAME may be given"
			name=$1
			shift
		fi
		;;
	-*)
		usage_error "unknown option '$1'"
		;;
	*)
		[[ -z $name ]] || usage_error "only one NAME may be given ('$name' and '$1')"
		name=$1
		shift
		;;
	esac
done

[[ -n $name ]] || usage_error "missing NAME"
[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] ||
	usage_error "NAME '$name' must be 1..64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit"
[[ $name != ca && $name != *.chain ]] || usage_error "NAME '$name' would clash with the CA or chain files"
[[ $ca_name != *[/\\=+,]* && -n $ca_name ]] || usage_error "--ca-name must be non-empty and contain none of / \\ = + ,"

if ((${#dns[@]} == 0 && ${#ips[@]} == 0)); then
	is_dns_name "$name" || usage_error "NAME '$name' is not a DNS name; give --dns or --ip"
	dns=("$name")
fi

command -v openssl >/dev/null 2>&1 || die "openssl not found (install the Debian package 'openssl')"

umask 077
mkdir -p -- "$dir" || die "cannot create directory '$dir'"
[[ -w $dir ]] || die "directory '$dir' is not writable"

work=$(mktemp -d "$dir/.gen-cert.XXXXXX") || die "cannot create a temporary directory in '$dir'"
trap 'rm -rf -- "$work"' EXIT

# Runs openssl quietly; on failure shows what it said and stops.
ossl() {
	local what=$1
	shift
	if ! openssl "$@" >"$work/openssl.log" 2>&1; then
		cat "$work/openssl.log" >&2
		die "openssl failed: $what"
	fi
}

new_key() { # path
	ossl "generating an ECDSA P-256 key" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
		-pkeyopt ec_param_enc:named_curve -out "$1"
	chmod 0600 "$1"
}

serial() {
	# 16 random bytes with the top bit cleared: a positive serial of at most 16 octets.
	local hex
	hex=$(openssl rand -hex 16) || die "openssl rand failed"
	printf '0x%x%s' $((0x${hex:0:1} & 7)) "${hex:1}"
}

# A config of our own so the host's openssl.cnf adds no extensions of its own.
cat >"$work/req.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF

ca_key=$dir/ca.key
ca_pem=$dir/ca.pem
if [[ -e $ca_key || -e $ca_pem ]] && ((force_ca == 0)); then
	[[ -f $ca_key ]] || die "'$ca_pem' exists without '$ca_key'; use --force-ca to make a new CA"
	[[ -f $ca_pem ]] || die "'$ca_key' exists without '$ca_pem'; refusing to overwrite the CA key (use --force-ca)"
	openssl x509 -in "$ca_pem" -noout 2>/dev/null || die "'$ca_pem' is not a PEM certificate; use --force-ca to replace it"
else
	new_key "$work/ca.key"
	ossl "making the CA certificate" req -new -x509 -config "$work/req.cnf" -extensions ca_ext \
		-key "$work/ca.key" -subj "/CN=$ca_name" -days "$ca_days" -sha256 \
		-set_serial "$(serial)" -out "$work/ca.pem"
	mv -f -- "$work/ca.key" "$ca_key"
	mv -f -- "$work/ca.pem" "$ca_pem"
	chmod 0644 "$ca_pem"
fi

san=
for d in "${dns[@]}"; do
	san+=${san:+,}DNS:$d
done
for a in "${ips[@]}"; do
	san+=${san:+,}IP:$a
done

cat >"$work/leaf.cnf" <<EOF
[leaf_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

new_key "$work/leaf.key"
ossl "making the certificate request for '$name'" req -new -config "$work/req.cnf" \
	-key "$work/leaf.key" -subj "/CN=$name" -out "$work/leaf.csr"
ossl "signing the certificate for '$name'" x509 -req -in "$work/leaf.csr" -CA "$ca_pem" \
	-CAkey "$ca_key" -set_serial "$(serial)" -days "$days" -sha256 \
	-extfile "$work/leaf.cnf" -extensions leaf_ext -out "$work/leaf.pem"
ossl "verifying the new certificate for '$name' against '$ca_pem'" verify -CAfile "$ca_pem" \
	"$work/leaf.pem"

cat "$work/leaf.pem" "$ca_pem" >"$work/leaf.chain.pem"
chmod 0644 "$work/leaf.pem" "$work/leaf.chain.pem"
mv -f -- "$work/leaf.key" "$dir/$name.key"
mv -f -- "$work/leaf.pem" "$dir/$name.pem"
mv -f -- "$work/leaf.chain.pem" "$dir/$name.chain.pem"

printf '%s: %s/%s.{key,pem,chain.pem} (CA %s)\n' "$prog" "$dir" "$name" "$ca_pem"
