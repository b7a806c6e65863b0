#!/usr/bin/env bash
# Generate offline TLS and SuperNode-authentication credentials for a Flower 1.42
# deployment of genefl (see docs/flower.md, "Security and deployment").
#
# Usage: scripts/flower_certs.sh [-n NUM_SUPERNODES] [-d DAYS] [-f] OUT_DIR [SAN ...]
#
#   -n NUM   number of registered SuperNode key pairs to create (default 2)
#   -d DAYS  validity of the CA and server certificates (default 365)
#   -f       overwrite an existing OUT_DIR/ca.crt (default: refuse)
#   SAN      extra subject alternative names for the SuperLink certificate: every
#            address or host name that SuperNodes, SuperExec and `flwr` use to reach
#            the SuperLink. IPv4/IPv6 literals become IP SANs, anything else a DNS SAN.
#            127.0.0.1, ::1 and localhost are always included (the SuperLink's own
#            SuperExec connects to 127.0.0.1).
#
# Writes (private keys are mode 600):
#   OUT_DIR/ca.crt, ca.key          certificate authority (keep ca.key offline)
#   OUT_DIR/server.pem, server.key  SuperLink TLS certificate and key, signed by the CA
#   OUT_DIR/keys/supernode_I, supernode_I.pub   (I = 1..NUM) ECDSA P-384 key pairs in
#                                   OpenSSH format, the format flower-supernode
#                                   --auth-supernode-private-key and
#                                   `flwr supernode register` read
#   OUT_DIR/keys/unregistered, unregistered.pub  a key pair that is never registered
#                                   (tests use it to check that the SuperLink refuses it)
#   OUT_DIR/keys/registered.txt     the public keys to register, one path per line:
#       while read -r k; do flwr supernode register "$k" CONNECTION; done < keys/registered.txt
#
# Needs only openssl, plus ssh-keygen or Python's `cryptography` package (a Flower
# dependency) to write the OpenSSH-format node keys; no network access.
set -euo pipefail

usage() { sed -n '5,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

num=2
days=365
force=0
while getopts ":n:d:fh" opt; do
  case "$opt" in
    n) num="$OPTARG" ;;
    d) days="$OPTARG" ;;
    f) force=1 ;;
    h) usage ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
out="$1"
shift
case "$num" in ''|*[!0-9]*) echo "flower_certs: -n needs a number" >&2; exit 2 ;; esac
case "$days" in ''|*[!0-9]*) echo "flower_certs: -d needs a number" >&2; exit 2 ;; esac

command -v openssl >/dev/null 2>&1 || { echo "flower_certs: openssl not found" >&2; exit 1; }

mkdir -p "$out/keys"
out="$(cd "$out" && pwd)"
if [ -e "$out/ca.crt" ] && [ "$force" != 1 ]; then
  echo "flower_certs: $out/ca.crt exists; use -f to overwrite" >&2
  exit 1
fi
umask 077

# Subject alternative names: always loopback, then the extra names given.
sans="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
  if [[ "$name" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || [[ "$name" == *:* ]]; then
    sans="$sans,IP:$name"
  else
    sans="$sans,DNS:$name"
  fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Certificate authority (EC P-384: fast to generate, accepted by gRPC, uvicorn, httpx).
openssl ecparam -name secp384r1 -genkey -noout -out "$out/ca.key" 2>/dev/null
openssl req -new -x509 -sha384 -days "$days" -key "$out/ca.key" \
  -subj "/O=genefl/CN=genefl Flower CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$out/ca.crt"

# SuperLink server certificate.
openssl ecparam -name secp384r1 -genkey -noout -out "$out/server.key" 2>/dev/null
openssl req -new -sha384 -key "$out/server.key" -subj "/O=genefl/CN=localhost" \
  -out "$tmp/server.csr"
cat > "$tmp/server.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=$sans
EXT
openssl x509 -req -sha384 -days "$days" -in "$tmp/server.csr" \
  -CA "$out/ca.crt" -CAkey "$out/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
  -extfile "$tmp/server.ext" -out "$out/server.pem" 2>/dev/null
openssl verify -CAfile "$out/ca.crt" "$out/server.pem" >/dev/null

# SuperNode authentication keys: ECDSA P-384, OpenSSH private/public key format.
gen_node_key() {  # $1 = path without extension
  rm -f "$1" "$1.pub"
  if [ -z "${FLOWER_CERTS_KEYGEN:-}" ] && command -v ssh-keygen >/dev/null 2>&1 \
     || [ "${FLOWER_CERTS_KEYGEN:-}" = ssh-keygen ]; then
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "" -f "$1"
  else
    # Fallback without ssh-keygen: openssl makes the key, cryptography converts it.
    openssl ecparam -name secp384r1 -genkey -noout -out "$tmp/node.pem" 2>/dev/null
    "${PYTHON:-python3}" - "$tmp/node.pem" "$1" <<'PY'
import sys
from cryptography.hazmat.primitives import serialization as s
key = s.load_pem_private_key(open(sys.argv[1], "rb").read(), None)
open(sys.argv[2], "wb").write(key.private_bytes(
    s.Encoding.PEM, s.PrivateFormat.OpenSSH, s.NoEncryption()))
open(sys.argv[2] + ".pub", "wb").write(key.public_key().public_bytes(
    s.Encoding.OpenSSH, s.PublicFormat.OpenSSH) + b"\n")
PY
  fi
  chmod 600 "$1"
  chmod 644 "$1.pub"
}

: > "$out/keys/registered.txt"
for i in $(seq 1 "$num"); do
  gen_node_key "$out/keys/supernode_$i"
  echo "$out/keys/supernode_$i.pub" >> "$out/keys/registered.txt"
done
gen_node_key "$out/keys/unregistered"
chmod 644 "$out/ca.crt" "$out/server.pem" "$out/keys/registered.txt"

echo "flower_certs: wrote CA, SuperLink certificate (SAN $sans) and $num SuperNode key pairs to $out"
