#!/bin/sh
# Drives the real `fedseg certs` code (through fedseg-certs-test, which calls
# certs_main) and cross-checks what it writes with the openssl CLI.
# Usage: test_certs_cli.sh /path/to/fedseg-certs-test
set -u
CERTS=${1:?usage: test_certs_cli.sh FEDSEG_CERTS_TEST_BINARY}
command -v openssl >/dev/null 2>&1 || {
	echo "FAIL: the openssl command (Debian package openssl) is needed for the cross-checks"
	exit 1
}
T=$(mktemp -d "${TMPDIR:-/tmp}/fedseg-certs-cli.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
D=$T/pki
fails=0
n=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
bad() { n=$((n + 1)); echo "not ok $n - $1"; fails=$((fails + 1)); }
check() { # check "what" command...
	what=$1; shift
	if "$@" >"$T/out" 2>"$T/err"; then ok "$what"; else
		bad "$what"; sed 's/^/    /' "$T/out" "$T/err"; fi
}
refuse() { # refuse "what" command...: must fail with a one-line reason
	what=$1; shift
	if "$@" >"$T/out" 2>"$T/err"; then
		bad "$what (succeeded)"
	elif [ "$(wc -l <"$T/err")" -ne 1 ]; then
		bad "$what (stderr is not one line)"; sed 's/^/    /' "$T/err"
	else
		ok "$what: $(cat "$T/err")"
	fi
}
mode_is() { # mode_is path 600
	m=$(stat -c %a "$1")
	if [ "$m" = "$2" ]; then ok "$1 has mode $2"; else bad "$1 has mode $m, want $2"; fi
}
contains() { # contains file pattern what
	if grep -q -- "$2" "$1"; then ok "$3"; else bad "$3"; sed 's/^/    /' "$1"; fi
}
lacks() {
	if grep -q -- "$2" "$1"; then bad "$3"; else ok "$3"; fi
}

# --help on every command
for c in init issue renew revoke crl show; do
	check "$c --help" "$CERTS" "$c" --help
	contains "$T/out" "usage: fedseg certs $c" "$c --help prints usage"
done
refuse "unknown command" "$CERTS" frobnicate
refuse "init without --federation" "$CERTS" init --dir "$D"

# init
check "init" "$CERTS" init --dir "$D" --federation brats-test --days 30
mode_is "$D" 700
mode_is "$D/ca.key" 600
openssl x509 -in "$D/ca.crt" -noout -text >"$T/ca.txt" 2>&1
contains "$T/ca.txt" "Subject: O = brats-test, CN = brats-test federation CA" "CA subject"
contains "$T/ca.txt" "Basic Constraints: critical" "CA basicConstraints critical"
contains "$T/ca.txt" "CA:TRUE" "CA:TRUE"
contains "$T/ca.txt" "Certificate Sign, CRL Sign" "CA keyUsage keyCertSign,cRLSign"
contains "$T/ca.txt" "Subject Key Identifier" "CA SKI"
contains "$T/ca.txt" "ASN1 OID: prime256v1" "CA key is P-256"
check "CA self-verifies" openssl verify -CAfile "$D/ca.crt" "$D/ca.crt"
check "empty CRL verifies against the CA" openssl crl -in "$D/crl.pem" -CAfile "$D/ca.crt" -noout
openssl crl -in "$D/crl.pem" -noout -text >"$T/crl.txt" 2>&1
contains "$T/crl.txt" "No Revoked Certificates" "CRL starts empty"
check "index.json is JSON" python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['federation']=='brats-test' and d['certs']==[]" "$D/index.json"
refuse "init over an existing CA" "$CERTS" init --dir "$D" --federation other

# issue
check "issue aggregator" "$CERTS" issue --dir "$D" --role aggregator --name agg
check "issue node" "$CERTS" issue --dir "$D" --role node --name site-a --days 10
check "issue node with SANs" "$CERTS" issue --dir "$D" --role node --name site-b --dns b.example.org --ip 10.0.0.7 --ip ::1
check "issue admin" "$CERTS" issue --dir "$D" --role admin --name ops.1
for f in agg site-a site-b ops.1; do
	mode_is "$D/$f.key" 600
	mode_is "$D/$f.pem" 600
	check "$f.pem holds the certificate then the key" sh -c \
		"grep -q 'BEGIN CERTIFICATE' '$D/$f.pem' && grep -q 'BEGIN PRIVATE KEY' '$D/$f.pem'"
	check "$f.key matches $f.crt" sh -c \
		"[ \"\$(openssl pkey -in '$D/$f.key' -pubout)\" = \"\$(openssl x509 -in '$D/$f.crt' -noout -pubkey)\" ]"
done
openssl x509 -in "$D/agg.crt" -noout -text >"$T/agg.txt" 2>&1
contains "$T/agg.txt" "Subject: O = brats-test, OU = aggregator, CN = agg" "aggregator subject"
contains "$T/agg.txt" "DNS:localhost, IP Address:127.0.0.1" "aggregator default SAN"
contains "$T/agg.txt" "TLS Web Server Authentication" "aggregator EKU serverAuth"
contains "$T/agg.txt" "Digital Signature" "aggregator keyUsage digitalSignature"
openssl x509 -in "$D/site-b.crt" -noout -text >"$T/b.txt" 2>&1
contains "$T/b.txt" "DNS:b.example.org, IP Address:10.0.0.7, IP Address:0:0:0:0:0:0:0:1" "node SANs from --dns/--ip"
contains "$T/b.txt" "TLS Web Client Authentication" "node EKU clientAuth"
lacks "$T/b.txt" "DNS:localhost" "node gets no default SAN"
check "aggregator verifies for TLS server use" openssl verify -CAfile "$D/ca.crt" -crl_check -CRLfile "$D/crl.pem" -purpose sslserver "$D/agg.crt"
check "node verifies for TLS client use" openssl verify -CAfile "$D/ca.crt" -crl_check -CRLfile "$D/crl.pem" -purpose sslclient "$D/site-a.crt"
serial=$(openssl x509 -in "$D/site-a.crt" -noout -serial | sed 's/serial=//' | tr 'A-F' 'a-f' | sed 's/^0*//')
check "index.json records site-a (serial, role, status)" python3 -c "
import json,sys
d=json.load(open(sys.argv[1]))
e=[c for c in d['certs'] if c['cn']=='site-a'][0]
assert e['serial'].lstrip('0')==sys.argv[2], (e['serial'], sys.argv[2])
assert e['role']=='node' and e['status']=='valid' and e['not_after'].endswith('Z')
" "$D/index.json" "$serial"
check "serial has ~128 random bits" python3 -c "import sys; assert int(sys.argv[1],16) >= 2**126" "$serial"

refuse "existing CN" "$CERTS" issue --dir "$D" --role node --name site-a
refuse "CN with a slash" "$CERTS" issue --dir "$D" --role node --name bad/name
refuse "CN with a space" "$CERTS" issue --dir "$D" --role node --name "bad name"
refuse "empty CN" "$CERTS" issue --dir "$D" --role node --name ""
refuse "65-character CN" "$CERTS" issue --dir "$D" --role node --name "$(printf 'a%.0s' $(seq 65))"
refuse "unknown role" "$CERTS" issue --dir "$D" --role root --name x1
refuse "bad IP" "$CERTS" issue --dir "$D" --role node --name x2 --ip 300.1.1.1
refuse "--days 0 without --not-before-days" "$CERTS" issue --dir "$D" --role node --name x3 --days 0
refuse "issue without a CA" "$CERTS" issue --dir "$T/none" --role node --name x4
check "64-character CN is fine" "$CERTS" issue --dir "$D" --role node --name "$(printf 'a%.0s' $(seq 64))"

# show
check "show site-a.pem" "$CERTS" show "$D/site-a.pem"
cp "$T/out" "$T/show.txt"
contains "$T/show.txt" "CN: *site-a" "show prints the CN"
contains "$T/show.txt" "OU: *node" "show prints the OU"
contains "$T/show.txt" "role: *node" "show prints the role"
contains "$T/show.txt" "O: *brats-test" "show prints the O"
contains "$T/show.txt" "brats-test federation CA" "show prints the issuer"
contains "$T/show.txt" "private key: *present (not shown)" "show says the key is present"
lacks "$T/show.txt" "PRIVATE KEY" "show never prints a key"
fp=$(openssl x509 -in "$D/site-a.crt" -noout -fingerprint -sha256 | sed 's/.*=//')
contains "$T/show.txt" "$fp" "show's fingerprint equals openssl's"
keyline=$(sed -n 2p "$D/site-a.key")
lacks "$T/show.txt" "$keyline" "no line of the key body in show's output"
check "show agg.crt" "$CERTS" show "$D/agg.crt"
contains "$T/out" "DNS:localhost, IP:127.0.0.1" "show prints SANs"
contains "$T/out" "private key: *absent" "show: no key in a .crt"
refuse "show a missing file" "$CERTS" show "$T/missing.pem"
printf 'hello\n' >"$T/junk.pem"
refuse "show a file with no PEM" "$CERTS" show "$T/junk.pem"

# revoke
crlnum() { openssl crl -in "$D/crl.pem" -noout -crlnumber | sed 's/.*=//; s/^0x//'; }
before=$(crlnum)
check "revoke site-a" "$CERTS" revoke --dir "$D" --name site-a --reason keyCompromise
after=$(crlnum)
if [ "$((0x$after))" -eq "$((0x$before + 1))" ]; then ok "crlNumber $before -> $after"; else bad "crlNumber $before -> $after"; fi
if openssl verify -CAfile "$D/ca.crt" -crl_check -CRLfile "$D/crl.pem" "$D/site-a.crt" >"$T/out" 2>&1; then
	bad "revoked site-a still verifies"
else
	contains "$T/out" "certificate revoked" "openssl verify: site-a is revoked"
fi
check "site-b still verifies" openssl verify -CAfile "$D/ca.crt" -crl_check -CRLfile "$D/crl.pem" "$D/site-b.crt"
openssl crl -in "$D/crl.pem" -noout -text >"$T/crl.txt" 2>&1
contains "$T/crl.txt" "Key Compromise" "CRL carries the reason"
check "CRL signed by the CA" openssl crl -in "$D/crl.pem" -CAfile "$D/ca.crt" -noout
check "index.json: site-a revoked" python3 -c "
import json,sys
d=json.load(open(sys.argv[1]))
e=[c for c in d['certs'] if c['cn']=='site-a'][0]
assert e['status']=='revoked' and e['reason']=='keyCompromise' and e['revoked_at']
" "$D/index.json"
refuse "revoke twice" "$CERTS" revoke --dir "$D" --name site-a
refuse "revoke an unknown CN" "$CERTS" revoke --dir "$D" --name nobody
refuse "revoke with a bad reason" "$CERTS" revoke --dir "$D" --name site-b --reason because
check "show crl.pem" "$CERTS" show "$D/crl.pem"
contains "$T/out" "$serial" "show lists the revoked serial"

# CRL renewal keeps the revocations
check "crl renew" "$CERTS" crl --dir "$D" --days 60
if [ "$((0x$(crlnum)))" -eq "$((0x$after + 1))" ]; then ok "renew bumps crlNumber"; else bad "renew did not bump crlNumber"; fi
if openssl verify -CAfile "$D/ca.crt" -crl_check -CRLfile "$D/crl.pem" "$D/site-a.crt" >/dev/null 2>&1; then
	bad "site-a verifies after CRL renewal"
else ok "site-a still revoked after CRL renewal"; fi

# renew: same CN, role and SAN; new key and serial; revoke takes both
old_serial=$(openssl x509 -in "$D/site-b.crt" -noout -serial)
old_key=$(openssl pkey -in "$D/site-b.key" -pubout)
check "renew site-b" "$CERTS" renew --dir "$D" --name site-b --days 20
mode_is "$D/site-b.key" 600
mode_is "$D/site-b.pem" 600
if [ "$(openssl x509 -in "$D/site-b.crt" -noout -serial)" != "$old_serial" ] &&
	[ "$(openssl pkey -in "$D/site-b.key" -pubout)" != "$old_key" ]; then
	ok "renewal has a new serial and a new key"
else bad "renewal kept the serial or the key"; fi
openssl x509 -in "$D/site-b.crt" -noout -text >"$T/b2.txt" 2>&1
contains "$T/b2.txt" "OU = node, CN = site-b" "renewal keeps CN and role"
contains "$T/b2.txt" "DNS:b.example.org, IP Address:10.0.0.7" "renewal keeps the SAN"
check "renewed site-b verifies" openssl verify -CAfile "$D/ca.crt" -crl_check -CRLfile "$D/crl.pem" "$D/site-b.crt"
cp "$D/site-b.crt" "$T/site-b-2.crt"
refuse "renew an unknown CN" "$CERTS" renew --dir "$D" --name nobody
check "revoke a renewed CN" "$CERTS" revoke --dir "$D" --name site-b
if openssl verify -CAfile "$D/ca.crt" -crl_check -CRLfile "$D/crl.pem" "$T/site-b-2.crt" >/dev/null 2>&1; then
	bad "renewed site-b verifies after revoke"; else ok "renewed site-b revoked"; fi
check "index.json: both site-b certificates revoked" python3 -c "
import json,sys
d=json.load(open(sys.argv[1]))
e=[c for c in d['certs'] if c['cn']=='site-b']
assert len(e)==2 and all(c['status']=='revoked' for c in e), e
assert e[0]['superseded_by']==e[1]['serial']
" "$D/index.json"

# test-only validity windows
check "issue an expired certificate (testing option)" "$CERTS" issue --dir "$D" --role node --name old --not-before-days -10 --days -1
openssl verify -CAfile "$D/ca.crt" "$D/old.crt" >"$T/out" 2>&1
contains "$T/out" "certificate has expired" "openssl: old.crt has expired"
check "show old.crt" "$CERTS" show "$D/old.crt"
contains "$T/out" "EXPIRED" "show flags an expired certificate"
check "issue a not-yet-valid certificate" "$CERTS" issue --dir "$D" --role node --name future --not-before-days 5 --days 30
openssl verify -CAfile "$D/ca.crt" "$D/future.crt" >"$T/out" 2>&1
contains "$T/out" "not yet valid" "openssl: future.crt is not yet valid"
refuse "notAfter before notBefore" "$CERTS" issue --dir "$D" --role node --name x5 --not-before-days -1 --days -3

# no temp files left behind
if ls -a "$D" | grep -q '\.tmp\.'; then bad "temp files left in $D"; else ok "no temp files left"; fi
# a certificate from another CA does not verify against this one
check "second CA" "$CERTS" init --dir "$T/other" --federation rogue
check "rogue node" "$CERTS" issue --dir "$T/other" --role node --name site-a
if openssl verify -CAfile "$D/ca.crt" "$T/other/site-a.crt" >/dev/null 2>&1; then
	bad "a rogue CA's certificate verifies"
else ok "a rogue CA's certificate does not verify"; fi

echo "$n checks, $fails failed"
[ "$fails" -eq 0 ]
