#!/usr/bin/env bash
# Prepares what the live tests (tests/live) need beside Python: Debian's Chromium
# with its driver for the browser test. Installs with apt-get when missing (root,
# or sudo without a password) and is quick when it is already there. It starts
# nothing: the browser test starts Chromium and quits it, and the PostgreSQL
# storage test starts its own server from the pgserver wheel and stops it.
#
# stdout: `export NAME=value` lines for the caller to eval (the Makefile does);
# everything else goes to stderr. It always exits 0: when something cannot be
# had, it exports the reason instead and the dependent tests skip with it.
#
#   eval "$(scripts/test-services.sh)"    prepare and export
#
# Exports: CORE4_TEST_CHROMIUM, CORE4_TEST_CHROMEDRIVER or CORE4_TEST_BROWSER_SKIP.
set -u

APT_TIMEOUT="${CORE4_TEST_APT_TIMEOUT:-900}"

say() { echo "test-services: $*" >&2; }
export_var() { printf 'export %s=%q\n' "$1" "$2"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo -n "$@"
    else return 1
    fi
}

APT_UPDATED=0
# apt_install PACKAGE...: install Debian packages; the first failure triggers one
# `apt-get update` and a retry (a fresh machine has no package lists yet).
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        APT_PROBLEM="apt-get is not available on this machine"; return 1
    fi
    if [ "$(id -u)" != 0 ] && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
        APT_PROBLEM="installing needs root or password-less sudo"; return 1
    fi
    local install=(env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT" apt-get install -y -q
                   --no-install-recommends -o DPkg::Lock::Timeout=300 "$@")
    say "apt-get install $*"
    if as_root "${install[@]}" >&2; then return 0; fi
    if [ "$APT_UPDATED" = 0 ]; then
        APT_UPDATED=1
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT" apt-get update -q \
            -o DPkg::Lock::Timeout=300 >&2 || true
        if as_root "${install[@]}" >&2; then return 0; fi
    fi
    APT_PROBLEM="apt-get install $* failed (see the output above)"
    return 1
}

# --- Chromium and its driver -------------------------------------------------

browser() {
    local chromium=/usr/bin/chromium driver=/usr/bin/chromedriver
    if [ ! -x "$chromium" ] || [ ! -x "$driver" ]; then
        APT_PROBLEM=""
        if ! apt_install chromium chromium-driver; then
            export_var CORE4_TEST_BROWSER_SKIP "Chromium could not be installed: $APT_PROBLEM"
            return
        fi
    fi
    if [ -x "$chromium" ] && [ -x "$driver" ]; then
        export_var CORE4_TEST_CHROMIUM "$chromium"
        export_var CORE4_TEST_CHROMEDRIVER "$driver"
    else
        export_var CORE4_TEST_BROWSER_SKIP "$chromium or $driver missing after installing chromium, chromium-driver"
    fi
}

browser
exit 0
