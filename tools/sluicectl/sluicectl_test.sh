#!/usr/bin/env bash
# sluicectl end to end on the seed manifests: validate and explain must give the answers the
# seed text promises. Fails on the first wrong answer.
set -euo pipefail
ctl=$1
root=$2
seed=$root/examples/seed
fail() { echo "FAIL: $*"; exit 1; }

"$ctl" --help >/dev/null || fail "--help"
"$ctl" validate "$seed" >/tmp/sluicectl-validate.$$ 2>&1 || { cat /tmp/sluicectl-validate.$$; fail "validate seed"; }
grep -q "reason: Accepted" /tmp/sluicectl-validate.$$ || fail "validate prints status"
rm -f /tmp/sluicectl-validate.$$

explain() { "$ctl" explain "$seed" --gateway default/prod-web --sni "$1" --host "$1" --path "$2" "${@:3}"; }
explain foo.example.com /login | grep -q "foo/foo-auth:8080" || fail "/login -> foo-auth"
explain foo.example.com /home/x | grep -q "foo/foo-home:8080" || fail "/home -> foo-home"
explain foo.example.com /anything | grep -q "foo/foo-404:8080" || fail "/anything -> foo-404"
out=$(explain bar.example.com / --header env=canary)
echo "$out" | grep -q "bar/bar-v2:8080 weight 1 (100%)" || { echo "$out"; fail "canary -> bar-v2 alone"; }
echo "$out" | grep -q "bar-v1" && fail "canary must not name bar-v1"
out=$(explain bar.example.com /)
echo "$out" | grep -q "bar/bar-v1:8080 weight 90 (90%)" || { echo "$out"; fail "split 90"; }
echo "$out" | grep -q "bar/bar-v2:8080 weight 10 (10%)" || { echo "$out"; fail "split 10"; }
explain bar.example.com / -o json | python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["outcome"]=="forward" and len(j["backends"])==2'
# Unknown host on the HTTPS listener: the route hostnames do not match -> 404
explain baz.example.com / | grep -q "answers 404" || fail "unknown host -> 404"
# Unreadable input -> exit 2; rejected object -> exit 1
set +e
"$ctl" validate /nonexistent >/dev/null 2>&1; [ $? -eq 2 ] || fail "exit 2 on unreadable input"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/bad.yaml" <<'YAML'
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: nope}]
  rules: [{backendRefs: [{name: missing, port: 80}]}]
YAML
"$ctl" validate "$tmp/bad.yaml" >"$tmp/out" 2>&1; rc=$?
[ $rc -eq 1 ] || { cat "$tmp/out"; fail "exit 1 when a route is not accepted (got $rc)"; }
grep -q "NoMatchingParent" "$tmp/out" || fail "NoMatchingParent reported"
grep -q "BackendNotFound" "$tmp/out" || fail "BackendNotFound reported"
echo "sluicectl: all checks passed"
