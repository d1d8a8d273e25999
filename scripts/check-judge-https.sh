#!/bin/bash
# Checks the MMHal judge client over real TLS on loopback (no network needed): a throw-away CA-less
# self-signed certificate, a Python https server that answers chat completions, and two runs of
# `p2dpo eval mmhal` on the test questions: without --judge-ca-bundle the certificate is refused
# (verification is on), with it both questions are judged. Needs python3 and openssl; not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${P2DPO:-./build/p2dpo}
T=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$T"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/key.pem" -out "$T/cert.pem" -days 1 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
cat > "$T/server.py" <<'PY'
import http.server, json, ssl, sys
class Judge(http.server.BaseHTTPRequestHandler):
    calls = 0
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Judge.calls += 1
        reply = json.dumps({"object": "chat.completion", "model": body["model"], "choices": [{"index": 0,
                 "message": {"role": "assistant", "content": "Rating: 6" if Judge.calls % 2 else "Rating: 2"},
                 "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), Judge)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
python3 "$T/server.py" "$T/cert.pem" "$T/key.pem" > "$T/port" &
SERVER=$!
for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.1; done
PORT=$(cat "$T/port")
D=tests/data/eval/mmhal-mini
run() {
  "$P" eval mmhal --model tests/data/llava-tiny-s0 --questions $D/questions.json --images $D/images \
    --judge-template $D/judge_template.txt --allow-template-change --judge-url "https://127.0.0.1:$PORT/v1" \
    --judge-model tls-judge --judge-max-retries 0 --conv-mode hf --max-new-tokens 4 --quiet --json "$@" 2>> "$T/stderr"
}
run --out "$T/untrusted" > /dev/null
grep -q "SSL certificate problem" "$T/untrusted/judge/mmhal_judge.jsonl" || { echo "FAIL: the self-signed certificate was not refused"; exit 1; }
echo "ok: without --judge-ca-bundle the self-signed certificate is refused"
run --out "$T/trusted" --judge-ca-bundle "$T/cert.pem" > /dev/null
python3 - "$T/trusted/results.json" <<'PY'
import json, sys
scores = json.load(open(sys.argv[1]))["results"]["scores"]
assert scores == [6, 2], scores
print("ok: with --judge-ca-bundle both questions were judged over https:", scores)
PY
