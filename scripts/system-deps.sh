#!/usr/bin/env bash
# System packages some tests drive for real: Debian's Chromium (the human-eval page test, via
# Playwright). Installed only when missing and when we can (root + apt); otherwise those tests
# skip and say why. Container tests install podman themselves (infra/podman.sh).
set -u
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: not root or no apt-get; tests needing ${need[*]} will skip" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}" >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
  || echo "system-deps: could not install ${need[*]}; those tests will skip" >&2
exit 0
