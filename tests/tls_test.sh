#!/usr/bin/env bash
# TLS and mutual TLS, on the gRPC port (tcm-client) and the HTTP port (curl):
# a server with --tls_cert/--tls_key/--tls_client_ca answers a client that
# presents a certificate from the CA, and refuses a client without one and a
# plaintext client; a server with --tls_cert/--tls_key only answers any client
# that trusts its CA and refuses plaintext and clients that do not trust it.
# A TLS flag naming an empty file or a directory stops either side at start.
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
# refused DESCRIPTION FRAGMENT client-args...: the call fails at once with
# UNAVAILABLE (a refused handshake, not a timeout) and FRAGMENT in its line.
refused() {
  local what="$1" fragment="$2" out
  shift 2
  if out="$("$client" "$@" --timeout 5 --out "refused" 2>&1)"; then
    echo "FAIL: $what was served"; fail=1
  elif [[ "$out" != *"tcm-client: UNAVAILABLE"* || "$out" != *"$fragment"* ]]; then
    echo "FAIL: $what: expected an UNAVAILABLE refusal with '$fragment', got: $out"; fail=1
  fi
}

# Mutual TLS: only a client with a certificate from the CA is served.
out="$("$client" --server "127.0.0.1:$port" --tls_ca ca.pem --tls_cert client.pem --tls_key client.key --out imgs 2>&1)" \
  || { echo "FAIL: mutual TLS client was refused: $out"; fail=1; }
ls imgs/*.png > /dev/null 2>&1 || { echo "FAIL: no image written over TLS"; fail=1; }
refused "a client without a certificate" "" --server "127.0.0.1:$port" --tls_ca ca.pem
refused "a plaintext client" "" --server "127.0.0.1:$port"

# https_status WANT DESCRIPTION curl-args... URL: the HTTPS listener's answer.
https_status() {
  local want="$1" what="$2" got
  shift 2
  got="$(curl -s -o https-body -w '%{http_code}' --max-time 30 "$@")"
  [[ "$got" == "$want" ]] || { echo "FAIL: $what: HTTP status $got, want $want ($(cat https-body 2> /dev/null))"; fail=1; }
}
https="https://127.0.0.1:$HTTP_PORT"
https_status 200 "HTTPS with a client certificate" --cacert ca.pem --cert client.pem --key client.key \
  "$https/v2/health/ready"
grep -q '"ready": true' https-body || { echo "FAIL: HTTPS readiness body: $(cat https-body)"; fail=1; }
https_status 403 "HTTPS without a client certificate" --cacert ca.pem "$https/v2/health/ready"
grep -q "tls_client_ca" https-body || { echo "FAIL: the 403 does not say why: $(cat https-body)"; fail=1; }
https_status 000 "plain HTTP on the TLS port" "http://127.0.0.1:$HTTP_PORT/v2/health/ready"

# Server-side TLS only: any client that trusts the server's CA is served.
kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2> /dev/null
start_server "$server" repo --metrics_port -1 --tls_cert server.pem --tls_key server.key
port="$GRPC_PORT"
out="$("$client" --server "127.0.0.1:$port" --tls_ca ca.pem --out tls-imgs 2>&1)" \
  || { echo "FAIL: a TLS client was refused: $out"; fail=1; }
ls tls-imgs/*.png > /dev/null 2>&1 || { echo "FAIL: no image written over server-side TLS"; fail=1; }
refused "a plaintext client of a TLS server" "" --server "127.0.0.1:$port"
https="https://127.0.0.1:$HTTP_PORT"
https_status 200 "an HTTPS client that trusts the server's CA" --cacert ca.pem \
  "$https/v1/models/uncond/generate?steps=1&seed=3"
[[ "$(head -c 8 https-body | od -An -c | tr -d ' ')" == "211PNG\r\n032\n" ]] \
  || { echo "FAIL: HTTPS generate did not answer a PNG"; fail=1; }
https_status 000 "an HTTPS client that does not trust the server's certificate" "$https/v2/health/live"
refused "a client that does not trust the server's certificate" "certificate verify failed" \
  --server "127.0.0.1:$port" --tls_ca client.pem

# Half-given TLS flags stop the server and the client with a line naming them,
# instead of falling back to plaintext.
flag_error() {  # flag_error FRAGMENT command...
  local fragment="$1" out rc
  shift
  out="$(timeout 60 "$@" 2>&1)"
  rc=$?
  if [[ $rc -eq 0 || $rc -eq 124 || "$out" != *"$fragment"* ]]; then
    echo "FAIL: '$*' gave exit $rc (want an error with '$fragment') and: $out"; fail=1
  fi
}
flag_error "--tls_client_ca: needs --tls_cert and --tls_key" \
  "$server" --model_repository repo --port 0 --metrics_port -1 --http_port -1 --tls_client_ca ca.pem
flag_error "--tls_cert and --tls_key go together: give both or neither" \
  "$server" --model_repository repo --port 0 --metrics_port -1 --http_port -1 --tls_key server.key
flag_error "--tls_cert and --tls_key go together: give both or neither" \
  "$client" --server "127.0.0.1:$port" --tls_key client.key --out half

# A TLS flag naming a file that is empty or not a regular file stops the server
# before it serves and the client before it calls: the flag turns TLS (mutual
# TLS for --tls_client_ca) on, whatever the file holds.
: > empty.pem
mkdir -p pem-dir
serve=("$server" --model_repository repo --port 0 --metrics_port -1 --http_port -1)
flag_error "--tls_cert: empty.pem: empty file" "${serve[@]}" --tls_cert empty.pem --tls_key empty.pem
flag_error "--tls_cert: pem-dir: not a regular file" "${serve[@]}" --tls_cert pem-dir --tls_key server.key
flag_error "--tls_key: empty.pem: empty file" "${serve[@]}" --tls_cert server.pem --tls_key empty.pem
flag_error "--tls_key: pem-dir: not a regular file" "${serve[@]}" --tls_cert server.pem --tls_key pem-dir
flag_error "--tls_client_ca: empty.pem: empty file" \
  "${serve[@]}" --tls_cert server.pem --tls_key server.key --tls_client_ca empty.pem
flag_error "--tls_client_ca: pem-dir: not a regular file" \
  "${serve[@]}" --tls_cert server.pem --tls_key server.key --tls_client_ca pem-dir
flag_error "--tls_ca: empty.pem: empty file" "$client" --server "127.0.0.1:$port" --tls_ca empty.pem --health
flag_error "--tls_ca: pem-dir: not a regular file" "$client" --server "127.0.0.1:$port" --tls_ca pem-dir --health
flag_error "--tls_cert: empty.pem: empty file" \
  "$client" --server "127.0.0.1:$port" --tls_ca ca.pem --tls_cert empty.pem --tls_key client.key --health
exit $fail
