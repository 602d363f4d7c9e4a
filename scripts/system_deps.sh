#!/usr/bin/env bash
# Debian packages the tests need: Chromium + ChromeDriver (the labeling page in a real browser),
# PostgreSQL 15 (the label store on a real server), Prometheus 2.42 (the dashboard's queries).
# Idempotent; tests that need one of these skip with a reason when it is absent and this script was not run.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v prometheus >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged services; the tests start their own in temporary folders.
  for svc in postgresql prometheus; do $SUDO service "$svc" stop >/dev/null 2>&1 || true; done
fi
