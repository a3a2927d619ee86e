#!/usr/bin/env bash
# Install what the browser tests and the page bench run besides Python: nginx (the reverse proxy
# of the compose stack), Chromium (renders /docs and MLflow's UI headless) and Chromium's headless
# shell (the Insights page's tests and `bench.page`: the browser Playwright itself uses for headless
# runs, without the full browser's own UI, which cost the page bench a core's worth of CPU).
# Debian packages; needs root. Does nothing when all are there, so CI pays for apt only on a
# fresh machine.
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromium-headless-shell >/dev/null 2>&1 || missing+=(chromium-headless-shell)
if [ ${#missing[@]} -eq 0 ]; then
  echo "e2e deps: nginx, chromium and chromium-headless-shell already installed"
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
