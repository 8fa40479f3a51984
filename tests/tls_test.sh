#!/usr/bin/env bash
# TLS and mutual TLS: a server with --tls_cert/--tls_key/--tls_client_ca
# answers a client that presents a certificate from the CA, and refuses a
# client without one and a plaintext client.
set -uo pipefail
server="$1"; client="$2"; convert="$3"; fixtures="$4"
tmp="$(mktemp -d)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
cd "$tmp" || exit 1

quiet() { "$@" > /dev/null 2>&1; }
quiet openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tcm test CA" -keyout ca.key -out ca.pem || exit 1
for who in server client; do
  quiet openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$who.key" -out "$who.csr" || exit 1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$who.ext"
  quiet openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "$who.ext" \
    -out "$who.pem" || exit 1
done

"$convert" --input "$fixtures/ddpmpp_cifar_tiny.weights.safetensors" --output repo/uncond > /dev/null || exit 1
"$server" --model_repository repo --port 0 --metrics_port -1 --tls_cert server.pem --tls_key server.key \
  --tls_client_ca ca.pem > server.log 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "serving" server.log && break; sleep 0.2; done
port="$(sed -nE 's/.* on port ([0-9]+) .*/\1/p' server.log)"
[[ -n "$port" ]] || { echo "server did not start:"; cat server.log; exit 1; }

fail=0
out="$("$client" --server "localhost:$port" --tls_ca ca.pem --tls_cert client.pem --tls_key client.key --out imgs 2>&1)" \
  || { echo "FAIL: mutual TLS client was refused: $out"; fail=1; }
ls imgs/*.png > /dev/null 2>&1 || { echo "FAIL: no image written over TLS"; fail=1; }
"$client" --server "localhost:$port" --tls_ca ca.pem --timeout 5 --out imgs2 > /dev/null 2>&1 \
  && { echo "FAIL: a client without a certificate was served"; fail=1; }
"$client" --server "localhost:$port" --timeout 5 --out imgs3 > /dev/null 2>&1 \
  && { echo "FAIL: a plaintext client was served"; fail=1; }
exit $fail
