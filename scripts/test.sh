#!/usr/bin/env bash
# Install the project with its test extra into ./.venv and run the whole test suite.
# Tests run from a temporary working directory: MindSpore's image decoder may drop
# ./abnormal_image.jpg into the current one.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX2}"
export MS_COMPILER_CACHE_ENABLE=1
# MindSpore's compile cache lives outside the clone, so a fresh clone starts warm; each entry is
# keyed by MindSpore's version, the package's code and the graph's settings
# (irv2_core/runtime/compile_cache.py), so stale entries are never used, only pruned here.
export MS_COMPILER_CACHE_PATH="${MS_COMPILER_CACHE_PATH:-${XDG_CACHE_HOME:-$HOME/.cache}/irv2/ms-compile}"
mkdir -p "$MS_COMPILER_CACHE_PATH"
find "$MS_COMPILER_CACHE_PATH" -mindepth 1 -maxdepth 2 -name 'irv2-*' -mtime +14 -exec rm -rf {} + || true
.venv/bin/ruff check "$repo"
.venv/bin/ruff format --check "$repo"
# tests/ui drives Debian's chromium through Playwright (Playwright's own browser download is not
# used). As root with apt, install it when missing. If it is still missing, the ui tier skips,
# saying why; with CI set (any non-empty value) this script fails instead: in CI a missing browser
# is an install bug, and a skipped tier would hide it behind a green run.
chromium="${IRV2_UI_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tests/ui: installing chromium with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
        >/dev/null || echo "tests/ui: installing chromium with apt-get failed"
fi
if [ ! -x "$chromium" ]; then
    if [ -n "${CI:-}" ]; then
        echo "tests/ui: no chromium at $chromium and CI is set: failing instead of skipping the" \
            "ui tier; install it with: apt-get install -y chromium (as root)" >&2
        exit 1
    fi
    echo "tests/ui: no chromium at $chromium; the ui tier will be skipped (apt-get install -y chromium)"
fi
in_ci() { case "$(echo "${CI:-}" | tr '[:upper:]' '[:lower:]')" in "" | 0 | false | no) return 1 ;; esac; }
# The tests that start a real Prefect server run it on PostgreSQL (tests/support/postgres.py), as
# production does. As root with apt, install it when missing; if that fails the run stops under
# CI (those tests would fail anyway), elsewhere they skip, saying why.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null \
    && [ -z "${IRV2_PG_BIN:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "tests: installing postgresql with apt-get"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
            >/dev/null; then
            echo "tests: installing postgresql failed"
            if in_ci; then exit 1; fi
        fi
    elif in_ci; then
        echo "tests: no PostgreSQL and no root apt-get (apt-get install -y postgresql)"
        exit 1
    else
        echo "tests: no PostgreSQL and no root apt-get; the Prefect server tests will be skipped"
    fi
fi
# tests/k8s_real talk to a real Kubernetes API server built from Debian's kubernetes source
# package (scripts/build_k8s.sh; cached outside the clone, keyed by version). With CI set a missing
# build is built here (~14 min cold on one core), never skipped; elsewhere the tier skips, naming
# the command.
if in_ci; then
    k8s_bin="$(JOBS="${JOBS:-2}" bash scripts/build_k8s.sh | tail -1)" || {
        echo "tests/k8s_real: building the Kubernetes control plane failed and CI is set" >&2
        exit 1
    }
    echo "tests/k8s_real: the Kubernetes control plane in $k8s_bin"
fi
work="$(mktemp -d)"
cd "$work"
# Two pytest-xdist workers, whole test files each (--dist loadfile keeps a module's fixtures in
# one process): most of a test's time is waiting on processes and servers, so two fill the two
# cores of a small machine. IRV2_TEST_WORKERS=0 runs the suite in this one process.
workers="${IRV2_TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != 0 ]; then parallel=(-n "$workers" --dist loadfile); fi
started=$(date +%s)
status=0
"$repo/.venv/bin/python" -m pytest "$repo/tests" -p no:cacheprovider "${parallel[@]}" "$@" || status=$?
echo "scripts/test.sh: pytest took $(( $(date +%s) - started )) s with ${workers} worker(s) (rc=$status)"
exit "$status"
