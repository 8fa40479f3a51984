#!/usr/bin/env bash
# TLS and mutual TLS: a server with --tls_cert/--tls_key/--tls_client_ca
# answers a client that presents a certificate from the CA, and refuses a
# client without one and a plaintext client.
set -uo pipefail
server="$1"; client="$2"; convert="$3"; fixtures="$4"
source "$(dirname "$0")/server_lib.sh"
cd "$TMP" || exit 1

quiet() { "$@" > /dev/null 2>&1; }
quiet openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tcm test CA" -keyout ca.key -out ca.pem || exit 1
for who in server client; do
  quiet openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$who.key" -out "$who.csr" || exit 1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$who.ext"
  quiet openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "$who.ext" \
    -out "$who.pem" || exit 1
done

"$convert" --input "$fixtures/ddpmpp_cifar_tiny.weights.safetensors" --output repo/uncond > /dev/null || exit 1
start_server "$server" repo --metrics_port -1 --tls_cert server.pem --tls_key server.key --tls_client_ca ca.pem
port="$GRPC_PORT"

fail=0
out="$("$client" --server "localhost:$port" --tls_ca ca.pem --tls_cert client.pem --tls_key client.key --out imgs 2>&1)" \
  || { echo "FAIL: mutual TLS client was refused: $out"; fail=1; }
ls imgs/*.png > /dev/null 2>&1 || { echo "FAIL: no image written over TLS"; fail=1; }
"$client" --server "localhost:$port" --tls_ca ca.pem --timeout 5 --out imgs2 > /dev/null 2>&1 \
  && { echo "FAIL: a client without a certificate was served"; fail=1; }
"$client" --server "localhost:$port" --timeout 5 --out imgs3 > /dev/null 2>&1 \
  && { echo "FAIL: a plaintext client was served"; fail=1; }
exit $fail
