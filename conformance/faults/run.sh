#!/bin/sh
# Fault injection of every plugin's ADD (conformance/faults/driver.rs), printing the table of
# steps tried and leftovers found. Needs root, strace and the debug (or TWILL_BIN_DIR) binaries.
set -e
cd "$(dirname "$0")/../.."
: "${TWILL_BIN_DIR:=$PWD/target/debug}"
export TWILL_BIN_DIR
exec cargo test -p conformance --test faults -- --nocapture
