#!/usr/bin/env bash
# Prepares what the live tests (tests/live) need beside Python: Debian's Chromium
# with its driver for the browser test, and a throwaway PostgreSQL on 127.0.0.1
# for the PostgreSQL storage test. Installs with apt-get when missing (root, or
# sudo without a password), starts PostgreSQL when it is not running, and is
# quick when everything is already there.
#
# stdout: `export NAME=value` lines for the caller to eval (the Makefile does);
# everything else goes to stderr. It always exits 0: when something cannot be
# had, it exports the reason instead and the dependent tests skip with it.
#
#   eval "$(scripts/test-services.sh)"    prepare and export
#   scripts/test-services.sh --stop       stop the throwaway PostgreSQL
#
# Exports: CORE4_TEST_CHROMIUM, CORE4_TEST_CHROMEDRIVER or CORE4_TEST_BROWSER_SKIP;
#          CORE4_TEST_POSTGRES_URL or CORE4_TEST_POSTGRES_SKIP.
set -u

PG_DIR="${CORE4_TEST_POSTGRES_DIR:-/tmp/core4-test-postgres-$(id -u)}"
PG_USER=core4
PG_DB=core4_test
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

# --- PostgreSQL ----------------------------------------------------------------

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# pg_as CMD...: PostgreSQL refuses to run as root; then its tools run as the postgres user.
pg_as() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_running() {
    [ -f "$PG_DIR/port" ] && "$1/pg_isready" -q -h 127.0.0.1 -p "$(cat "$PG_DIR/port")" 2>/dev/null
}

pg_start() {
    local bin=$1 port
    port=$(free_port) || return 1
    echo "$port" >"$PG_DIR/port"
    # A throwaway test cluster: durability settings off for speed, loopback only.
    pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$PG_DIR/socket -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >&2
}

pg_init() {
    local bin=$1
    rm -rf "$PG_DIR"
    mkdir -p "$PG_DIR/socket"
    chmod 700 "$PG_DIR"
    python3 -c 'import secrets; print(secrets.token_hex(16))' >"$PG_DIR/password"
    if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$PG_DIR"; fi
    pg_as "$bin/initdb" -D "$PG_DIR/data" -U "$PG_USER" --pwfile="$PG_DIR/password" \
        --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >&2
}

postgres() {
    local bin
    bin=$(pg_bin)
    if [ -z "$bin" ]; then
        APT_PROBLEM=""
        apt_install postgresql || { export_var CORE4_TEST_POSTGRES_SKIP "PostgreSQL could not be installed: $APT_PROBLEM"; return; }
        bin=$(pg_bin)
    fi
    if [ -z "$bin" ]; then
        export_var CORE4_TEST_POSTGRES_SKIP "no /usr/lib/postgresql/*/bin after installing postgresql"
        return
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        export_var CORE4_TEST_POSTGRES_SKIP "running as root and there is no postgres user to run the server as"
        return
    fi
    if ! pg_running "$bin"; then
        if [ ! -f "$PG_DIR/data/PG_VERSION" ] || [ ! -f "$PG_DIR/password" ]; then
            say "creating a throwaway PostgreSQL cluster in $PG_DIR"
            pg_init "$bin" || { export_var CORE4_TEST_POSTGRES_SKIP "initdb failed in $PG_DIR"; return; }
        fi
        say "starting PostgreSQL from $PG_DIR"
        pg_start "$bin" || pg_start "$bin" || {
            export_var CORE4_TEST_POSTGRES_SKIP "PostgreSQL did not start; see $PG_DIR/server.log"
            return
        }
    fi
    local port
    port=$(cat "$PG_DIR/port")
    if ! "$bin/psql" -h "$PG_DIR/socket" -p "$port" -U "$PG_USER" -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" 2>/dev/null | grep -q 1; then
        pg_as "$bin/createdb" -h "$PG_DIR/socket" -p "$port" -U "$PG_USER" "$PG_DB" >&2 || {
            export_var CORE4_TEST_POSTGRES_SKIP "createdb $PG_DB failed on port $port"
            return
        }
    fi
    export_var CORE4_TEST_POSTGRES_URL "postgresql://$PG_USER:$(cat "$PG_DIR/password")@127.0.0.1:$port/$PG_DB"
    say "PostgreSQL on 127.0.0.1:$port (data in $PG_DIR)"
}

postgres_stop() {
    local bin
    bin=$(pg_bin)
    if [ -n "$bin" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
        pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >&2 || true
    fi
}

if [ "${1:-}" = "--stop" ]; then
    postgres_stop
    exit 0
fi
browser
postgres
exit 0
