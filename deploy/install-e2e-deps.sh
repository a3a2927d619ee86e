#!/usr/bin/env bash
# Install what tests/test_e2e_deploy.py runs besides Python: nginx (the reverse proxy of the
# compose stack) and Chromium (renders /docs headless). Debian packages; needs root.
# Does nothing when both are already there, so CI pays for apt only on a fresh machine.
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
  echo "e2e deps: nginx and chromium already installed"
  exit 0
fi

echo "e2e deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends keeps Chromium's install to what headless rendering needs.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a system nginx on port 80; the test runs its own instance and
# never needs that one. Stop it if it was started (no systemd here: use the init script).
if [[ " ${missing[*]} " == *" nginx "* ]] && [ -x /etc/init.d/nginx ]; then
  /etc/init.d/nginx stop >/dev/null 2>&1 || true
fi
echo "e2e deps: installed ${missing[*]}"
