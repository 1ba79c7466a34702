#!/usr/bin/env bash
# Prove the runtime on emulated Raspberry Pi cores: build (or reuse) a minimal arm64
# Debian root, install the aarch64 wheels of numpy and onnxruntime and a wheel of this
# project built from the working tree (--no-deps: no torch, no onnx), and run
# benchmarks/arm/check.py inside it under qemu-user with QEMU_CPU = cortex-a53 (Pi 3),
# cortex-a72 (Pi 4) and cortex-a76 (Pi 5), against exports made on this host.
#
# Usage (as root):
#   benchmarks/arm/emulate.sh [--cores "cortex-a53 cortex-a72 cortex-a76"] [--json REPORT]
#                          [--cache DIR] [--python HOST_PYTHON] [--mirror URL] [--keep-work]
#   benchmarks/arm/emulate.sh --preflight     only check the machine (root, packages, binfmt_misc,
#                                          which it sets up), then exit 0 or 77
#
# Exit status: 0 every check passed on every core; 1 a check failed (the report says
# which); 2 bad usage; 77 this machine cannot run it (the first lines of stderr say what
# is missing and how to get it: not root, qemu-user-static / mmdebstrap / binfmt-support
# missing, binfmt_misc unavailable, packages not downloadable).
#
# Cache: ${ZOR_ARM_CACHE:-${XDG_CACHE_HOME:-~/.cache}/zor-arm}: the arm64 root under
# roots/KEY (KEY: hash of the suite, the Debian packages and the pinned numpy /
# onnxruntime / click versions, which are the host's, so both sides run the same
# onnxruntime release) and the host exports under fixtures/KEY (KEY: hash of the project
# sources and the host's torch/onnx/onnxruntime/numpy versions). The project wheel is
# rebuilt from the working tree and reinstalled on every run.
#
# System setup that stays: where binfmt_misc is not mounted, or qemu-aarch64 not enabled in
# it, the script (and --preflight) mounts it and runs update-binfmts --enable qemu-aarch64.
#
# Mounts: the script runs its mounts in a private mount namespace (unshare), so they
# vanish with it however it ends; a trap also unmounts them on any exit. Nothing of the
# host's /proc or /sys is mounted into the root (qemu 7.2 shows the program the host's
# x86 /proc/cpuinfo, and onnxruntime's cpuinfo then crashes). Instead, per core, the
# root's /proc/cpuinfo is the text kernel_cpuinfo.py writes from the emulated CPU's own
# MIDR_EL1 and HWCAPs, and its /sys holds only the CPU list (devices/system/cpu/
# possible, present, online), so that onnxruntime's cpuinfo sees the core as on a Pi.
#
# Environment: ZOR_ARM_QEMU (default qemu-aarch64-static), ZOR_ARM_MMDEBSTRAP (default
# mmdebstrap), ZOR_ARM_MIRROR, ZOR_ARM_CACHE, ZOR_ARM_PACKAGES (pip requirements for the
# root instead of the host's numpy/onnxruntime/click versions), ZOR_ARM_JOBS (cores
# emulated at once; default: the host's CPU count).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CANNOT=77
SUITE=bookworm
TARGET_PY=3.11                      # bookworm's python3
DEB_PACKAGES="python3,libstdc++6"
RECIPE_VERSION=1                    # bump when the way the root is built changes
declare -A PROFILE_OF=([cortex-a53]=rpi3 [cortex-a72]=rpi4 [cortex-a76]=rpi5)
CORES="cortex-a53 cortex-a72 cortex-a76"
QEMU=${ZOR_ARM_QEMU:-qemu-aarch64-static}
MMDEBSTRAP=${ZOR_ARM_MMDEBSTRAP:-mmdebstrap}
CACHE=${ZOR_ARM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/zor-arm}
MIRROR=${ZOR_ARM_MIRROR:-}
JSON=""
PY=""
PREFLIGHT=0
KEEP=0
BINFMT=/proc/sys/fs/binfmt_misc

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die_usage() { echo "emulate.sh: $1 (see --help)" >&2; exit 2; }
cannot() { echo "emulate.sh: cannot run here: $1" >&2; exit "$CANNOT"; }
log() { echo "[zor-arm] $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --cores) [ $# -ge 2 ] || die_usage "--cores needs a list"; CORES=$2; shift 2 ;;
        --json) [ $# -ge 2 ] || die_usage "--json needs a path"; JSON=$2; shift 2 ;;
        --cache) [ $# -ge 2 ] || die_usage "--cache needs a folder"; CACHE=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || die_usage "--python needs a path"; PY=$2; shift 2 ;;
        --mirror) [ $# -ge 2 ] || die_usage "--mirror needs a URL"; MIRROR=$2; shift 2 ;;
        --preflight) PREFLIGHT=1; shift ;;
        --keep-work) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die_usage "unknown argument '$1'" ;;
    esac
done
for core in $CORES; do
    [ -n "${PROFILE_OF[$core]:-}" ] || die_usage "unknown core '$core': expected some of ${!PROFILE_OF[*]}"
done
[ -n "$CORES" ] || die_usage "--cores is empty: expected some of ${!PROFILE_OF[*]}"
if [ -n "$JSON" ]; then
    [ -d "$(dirname "$JSON")" ] || die_usage "--json $JSON: folder $(dirname "$JSON") does not exist"
    JSON=$(cd "$(dirname "$JSON")" && pwd)/$(basename "$JSON")
fi
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python; else PY=$(command -v python3 || true); fi
fi

# ---------------------------------------------------------------- preflight
preflight() {
    local missing=()
    [ "$(uname -s)" = Linux ] || cannot "needs Linux (qemu-user and binfmt_misc), this is $(uname -s)"
    [ "$(uname -m)" = x86_64 ] || cannot "written for an x86-64 host emulating aarch64, this is $(uname -m)"
    if [ "$(id -u)" != 0 ]; then
        missing+=("root: mmdebstrap --mode=root, chroot and bind mounts need uid 0 (run it as root, e.g. sudo $0)")
    fi
    command -v "$QEMU" >/dev/null 2>&1 || missing+=("$QEMU: apt-get install qemu-user-static")
    command -v "$MMDEBSTRAP" >/dev/null 2>&1 || missing+=("$MMDEBSTRAP: apt-get install mmdebstrap")
    command -v unshare >/dev/null 2>&1 && command -v flock >/dev/null 2>&1 \
        || missing+=("unshare/flock: apt-get install util-linux")
    if [ ${#missing[@]} -gt 0 ]; then
        printf 'emulate.sh: cannot run here, missing:\n' >&2
        printf '  - %s\n' "${missing[@]}" >&2
        printf '  (all at once, as root: apt-get install -y --no-install-recommends qemu-user-static binfmt-support mmdebstrap arch-test)\n' >&2
        exit "$CANNOT"
    fi
    # binfmt_misc: the kernel hands aarch64 ELF files to qemu.
    if ! mountpoint -q "$BINFMT"; then
        local err
        if ! err=$(mount -t binfmt_misc binfmt_misc "$BINFMT" 2>&1); then
            cannot "binfmt_misc is not mounted and mounting it failed ($err): load the module (modprobe binfmt_misc) or, in a container, run it privileged"
        fi
        log "mounted binfmt_misc on $BINFMT"
    fi
    if ! grep -qs '^enabled' "$BINFMT/qemu-aarch64"; then
        command -v update-binfmts >/dev/null 2>&1 \
            || cannot "no qemu-aarch64 entry in $BINFMT and update-binfmts is missing: apt-get install binfmt-support qemu-user-static"
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
        grep -qs '^enabled' "$BINFMT/qemu-aarch64" \
            || cannot "qemu-aarch64 is not registered with binfmt_misc ($BINFMT/qemu-aarch64 missing or disabled) and 'update-binfmts --enable qemu-aarch64' did not fix it: apt-get install --reinstall qemu-user-static binfmt-support"
    fi
    local err2
    err2=$(unshare --mount --propagation private true 2>&1) \
        || cannot "cannot create a private mount namespace ($err2): run it as root on the host or in a privileged container"
    if command -v arch-test >/dev/null 2>&1 && ! arch-test arm64 >/dev/null 2>&1; then
        cannot "arch-test arm64 fails although qemu-aarch64 is registered: $(arch-test arm64 2>&1 | tail -1)"
    fi
}
[ -n "${ZOR_ARM_IN_NS:-}" ] || preflight         # the re-run inside the namespace below skips it
if [ "$PREFLIGHT" = 1 ]; then
    echo "emulate.sh: this machine can run it (root, $QEMU $("$QEMU" --version | head -1 | awk '{print $3}'), $MMDEBSTRAP, binfmt qemu-aarch64 enabled)"
    exit 0
fi
# The host side (exports) needs the project's own environment, not the machine's.
if [ -z "$PY" ] || ! "$PY" -c "import importlib.util as u, sys
sys.exit(0 if all(u.find_spec(m) for m in ('torch', 'onnx', 'onnxruntime', 'zor.export')) else 1)" >/dev/null 2>&1; then
    cannot "no host Python with the exporter (torch, onnx, onnxruntime, zor.export) at '${PY:-none}': create the venv (make test does) or pass --python PATH"
fi

# Every mount below lives in a private mount namespace: it cannot outlive the script.
if [ -z "${ZOR_ARM_IN_NS:-}" ]; then
    args=(--cores "$CORES" --cache "$CACHE" --python "$PY")
    [ -n "$MIRROR" ] && args+=(--mirror "$MIRROR")
    [ -n "$JSON" ] && args+=(--json "$JSON")
    [ "$KEEP" = 1 ] && args+=(--keep-work)
    ZOR_ARM_IN_NS=1 exec unshare --mount --propagation private "$BASH" "$0" "${args[@]}"
fi

T0=$(now)
mkdir -p "$CACHE/roots" "$CACHE/fixtures"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zor-arm-work.XXXXXX")
ROOT=""
mounts_under() {   # mount points under $1, deepest first
    awk -v r="$1/" 'index($5, r) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}
cleanup() {
    local rc=$? m pid
    for pid in $(jobs -p); do                # cores still running: stop them and their children
        kill -TERM $(ps -o pid= --ppid "$pid" 2>/dev/null) "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ -n "$ROOT" ] && [ -d "$ROOT" ]; then
        for m in $(mounts_under "$ROOT"); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    fi
    rm -rf "$CACHE/roots/.build-$$"
    [ "$rc" -lt 128 ] || log "interrupted (exit $rc): mounts and work folder cleaned up"
    if [ "$KEEP" = 1 ]; then log "work folder kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

exec 9>"$CACHE/lock"
flock -w 900 9 || cannot "another emulate.sh holds $CACHE/lock for more than 15 minutes"

TIMINGS=$WORK/timings.txt
: >"$TIMINGS"
timing() { echo "$1 $2" >>"$TIMINGS"; }

# ---------------------------------------------------------------- the arm64 root (cached)
pick_mirror() {
    [ -n "$MIRROR" ] && { echo "$MIRROR"; return; }
    local m=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        m=$(awk -v s="$SUITE" 'BEGIN { RS = ""; IGNORECASE = 1 }
            { uri = ""; ok = 0
              n = split($0, L, "\n")
              for (i = 1; i <= n; i++) {
                  if (L[i] ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", L[i]); split(L[i], U, /[ \t]+/); uri = U[1] }
                  if (L[i] ~ /^Suites:/) { k = split(L[i], S, /[ \t]+/); for (j = 2; j <= k; j++) if (S[j] == s) ok = 1 }
              }
              if (ok && uri != "") { print uri; exit } }' /etc/apt/sources.list.d/*.sources 2>/dev/null)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk -v s="$SUITE" '$1 == "deb" {
                i = 2                                   # skip "[ options ]"
                if ($i ~ /^\[/) while ($i !~ /\]$/) i++
                if ($i ~ /^\[/ || $i ~ /\]$/) i++
                if ($(i + 1) == s) { print $i; exit } }' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=$(pick_mirror)

if [ -n "${ZOR_ARM_PACKAGES:-}" ]; then
    PIP_PACKAGES=$ZOR_ARM_PACKAGES
else
    PIP_PACKAGES=$("$PY" -c 'from importlib.metadata import version as v
print(" ".join(f"{p}=={v(p)}" for p in ("numpy", "onnxruntime", "click")))')
fi
PLATFORMS="manylinux_2_28_aarch64 manylinux_2_27_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64"
ROOT_KEY=$(printf '%s\n' "$RECIPE_VERSION" "$SUITE" arm64 "$DEB_PACKAGES" "$TARGET_PY" "$PIP_PACKAGES" "$PLATFORMS" \
    | sha256sum | cut -c1-16)
ROOT=$CACHE/roots/$ROOT_KEY
ROOT_STATE=reused
t=$(now)
if [ ! -f "$ROOT/.complete" ]; then
    ROOT_STATE=built
    BUILD=$CACHE/roots/.build-$$
    rm -rf "$BUILD" "$ROOT"
    log "building the arm64 $SUITE root from $MIRROR (key $ROOT_KEY)"
    if ! "$MMDEBSTRAP" --mode=root --variant=extract --arch=arm64 --include="$DEB_PACKAGES" --quiet \
            "$SUITE" "$BUILD" "$MIRROR" >"$WORK/mmdebstrap.log" 2>&1; then
        tail -5 "$WORK/mmdebstrap.log" >&2
        cannot "mmdebstrap could not build the arm64 root from $MIRROR (no network to the Debian mirror? set ZOR_ARM_MIRROR)"
    fi
    timing root_debootstrap_s "$(elapsed "$t")"
    t2=$(now)
    log "installing aarch64 wheels: $PIP_PACKAGES"
    # shellcheck disable=SC2086
    if ! "$PY" -m pip install -q --disable-pip-version-check --target "$BUILD/opt/site" --no-compile \
            --only-binary=:all: --implementation cp --python-version "$TARGET_PY" --abi "cp${TARGET_PY/./}" \
            $(printf -- '--platform %s ' $PLATFORMS) $PIP_PACKAGES >"$WORK/pip.log" 2>&1; then
        tail -5 "$WORK/pip.log" >&2
        cannot "pip could not download aarch64 wheels for $PIP_PACKAGES (no network to PyPI, or no aarch64 wheel of these versions; set ZOR_ARM_PACKAGES)"
    fi
    timing root_wheels_s "$(elapsed "$t2")"
    mkdir -p "$BUILD/proc" "$BUILD/sys" "$BUILD/mnt/work" "$BUILD/opt/zor" "$BUILD/tmp"
    : >"$BUILD/proc/cpuinfo"                 # bind target for the emulated CPU's cpuinfo
    chmod 1777 "$BUILD/tmp"
    printf '%s\n' "suite=$SUITE" "mirror=$MIRROR" "debs=$DEB_PACKAGES" "wheels=$PIP_PACKAGES" >"$BUILD/.zor-arm"
    touch "$BUILD/.complete"
    mv "$BUILD" "$ROOT"
    for old in "$CACHE"/roots/*; do          # keep one root: they are ~200 MB each
        [ "$old" = "$ROOT" ] || { log "removing stale root $old"; rm -rf "$old"; }
    done
fi
timing root_s "$(elapsed "$t")"
# Interpreter registered without the F flag: it must be visible inside the root.
INTERP=$(awk '/^interpreter/ { print $2 }' "$BINFMT/qemu-aarch64")
if ! grep -q '^flags:.*F' "$BINFMT/qemu-aarch64" && [ ! -x "$ROOT$INTERP" ]; then
    mkdir -p "$ROOT$(dirname "$INTERP")" && cp "$(readlink -f "$INTERP")" "$ROOT$INTERP"
fi

host_compile() {      # bytecode for the target's Python, compiled on the host when the versions agree
    if "$PY" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$TARGET_PY' else 1)"; then
        "$PY" -m compileall -q -j 0 "$@" >/dev/null 2>&1 || true
    fi
}
[ -f "$ROOT/.compiled" ] || { host_compile "$ROOT/opt/site"; touch "$ROOT/.compiled"; }

# ---------------------------------------------------------------- the project wheel (from the working tree)
# Keyed by the content of everything that goes into it: rebuilt and reinstalled when any
# file of the working tree's packages changes, reused otherwise.
src_hash() {   # sha256 of the named files and folders' files (no bytecode)
    (cd "$REPO" && find "$@" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
t=$(now)
WHEEL_KEY=$(src_hash pyproject.toml README.md zor export runtime devices)
WHEEL_STATE=reused
if [ "$(cat "$ROOT/opt/zor/.zor-wheel-key" 2>/dev/null)" != "$WHEEL_KEY" ]; then
    WHEEL_STATE=built
    mkdir -p "$WORK/src" "$WORK/dist"
    (cd "$REPO" && tar --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md zor export runtime devices) \
        | tar -xf - -C "$WORK/src"
    if ! "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" >"$WORK/wheel.log" 2>&1; then
        "$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src" >>"$WORK/wheel.log" 2>&1 \
            || { tail -20 "$WORK/wheel.log" >&2; echo "emulate.sh: building the project wheel failed" >&2; exit 1; }
    fi
    WHEEL=$(ls "$WORK"/dist/*.whl)
    rm -rf "$ROOT/opt/zor" && mkdir -p "$ROOT/opt/zor"
    "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-compile --target "$ROOT/opt/zor" "$WHEEL" \
        >"$WORK/install.log" 2>&1 || { tail -20 "$WORK/install.log" >&2; echo "emulate.sh: installing the wheel into the root failed" >&2; exit 1; }
    # pip --target writes the console scripts with the host interpreter's path; on the
    # device pip writes the device's. Point them at the root's python3.
    for s in "$ROOT"/opt/zor/bin/*; do sed -i '1s|^#!.*python.*$|#!/usr/bin/python3|' "$s"; done
    host_compile "$ROOT/opt/zor"
    basename "$WHEEL" >"$ROOT/opt/zor/.zor-wheel"
    echo "$WHEEL_KEY" >"$ROOT/opt/zor/.zor-wheel-key"
fi
WHEEL=$(cat "$ROOT/opt/zor/.zor-wheel")
timing wheel_s "$(elapsed "$t")"

# ---------------------------------------------------------------- host exports (cached by source hash)
t=$(now)
# The host's int8 kernel (its ISA) is part of the key: the host int8 run differs by kernel.
FIX_KEY=$( { echo "$WHEEL_KEY"; sha256sum "$HERE/prepare.py" "$HERE/parity.py" "$HERE/qdq.py" "$HERE/hostcheck.py" \
                 | cut -d' ' -f1; { grep -o -w -E 'avx2|avx512bw|avx512_vnni|avx_vnni' /proc/cpuinfo || true; } | sort -u | tr '\n' ' ';
             "$PY" -c 'from importlib.metadata import version as v
print(*(v(p) for p in ("numpy", "onnx", "onnxruntime", "torch")))'; } | sha256sum | cut -c1-16)
FIX=$CACHE/fixtures/$FIX_KEY
FIX_STATE=reused
if [ ! -f "$FIX/manifest.json" ]; then
    FIX_STATE=built
    rm -rf "$FIX.tmp-$$"
    log "exporting the models on the host (float32, int8, stateful)"
    OMP_NUM_THREADS=1 "$PY" "$HERE/prepare.py" "$FIX.tmp-$$" >"$WORK/prepare.log" 2>&1 \
        || { tail -20 "$WORK/prepare.log" >&2; rm -rf "$FIX.tmp-$$"; echo "emulate.sh: the host exports failed" >&2; exit 1; }
    rm -rf "$FIX" && mv "$FIX.tmp-$$" "$FIX"
    for old in "$CACHE"/fixtures/*; do [ "$old" = "$FIX" ] || rm -rf "$old"; done
fi
timing fixtures_s "$(elapsed "$t")"
cp "$FIX"/* "$WORK/"
cp "$HERE/check.py" "$HERE/parity.py" "$HERE/qdq.py" "$HERE/kernel_cpuinfo.py" "$WORK/"
mkdir -p "$WORK/out"
timing setup_s "$(elapsed "$T0")"
echo "root_state $ROOT_STATE" >>"$TIMINGS"
echo "fixtures_state $FIX_STATE" >>"$TIMINGS"
echo "wheel_state $WHEEL_STATE" >>"$TIMINGS"

# ---------------------------------------------------------------- the checks, per core
# Each core runs in a mount namespace of its own (its /proc/cpuinfo and /sys differ), so
# up to JOBS cores run at once on one root.
mkdir -p "$ROOT/sys"
mount --bind "$WORK" "$ROOT/mnt/work"
CHROOT=$(command -v chroot)
root_env() {  # root_env CORE: the clean environment of a program in the root on emulated CORE
    ROOT_ENV=(env -i PATH=/opt/zor/bin:/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8
              PYTHONPATH=/opt/zor:/opt/site QEMU_CPU="$1" OMP_NUM_THREADS=1)
}
run_core() {  # run_core CORE: both phases; exit status in $WORK/rc-CORE, output in $WORK/log-CORE
    local core=$1 t rc=0 f ncpu ROOT_ENV
    t=$(now)
    root_env "$core"
    if ! "${ROOT_ENV[@]}" "$CHROOT" "$ROOT" /usr/bin/python3 /mnt/work/kernel_cpuinfo.py \
            >"$WORK/cpuinfo-$core.txt" 2>"$WORK/cpuinfo-$core.err"; then
        cat "$WORK/cpuinfo-$core.err"
        echo "emulate.sh: $core: could not read the emulated CPU's identity"
        echo 1 >"$WORK/rc-$core"; return
    fi
    # The CPU list a kernel shows in sysfs, for the same CPUs (onnxruntime's cpuinfo reads it).
    ncpu=$(grep -c '^processor' "$WORK/cpuinfo-$core.txt")
    mkdir -p "$WORK/sys-$core/devices/system/cpu"
    for f in possible present online; do echo "0-$((ncpu - 1))" >"$WORK/sys-$core/devices/system/cpu/$f"; done
    unshare --mount --propagation private "$BASH" -c 'set -e
        mount --bind -o ro "$1" "$2/proc/cpuinfo"; mount --bind -o ro "$3" "$2/sys"; shift 3; exec "$@"' _ \
        "$WORK/cpuinfo-$core.txt" "$ROOT" "$WORK/sys-$core" "${ROOT_ENV[@]}" "$CHROOT" "$ROOT" \
        /usr/bin/python3 /mnt/work/check.py --core "$core" --expect "${PROFILE_OF[$core]}" --work /mnt/work \
        --out "/mnt/work/out/$core.json" 2>"$WORK/check-$core.err" || rc=$?
    if [ "$rc" != 0 ] && [ ! -f "$WORK/out/$core.json" ]; then
        tail -20 "$WORK/check-$core.err"; echo "emulate.sh: $core: the check crashed (exit $rc)"
    fi
    timing "core_${core}_s" "$(elapsed "$t")"
    echo "$rc" >"$WORK/rc-$core"
}
JOBS=${ZOR_ARM_JOBS:-$(nproc)}
FAILED=0
for core in $CORES; do
    while [ "$(jobs -pr | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    log "$core: started"
    run_core "$core" >"$WORK/log-$core" 2>&1 &
done
wait
for core in $CORES; do
    cat "$WORK/log-$core"
    [ "$(cat "$WORK/rc-$core" 2>/dev/null)" = 0 ] || FAILED=1
done
umount "$ROOT/mnt/work"
[ -z "$(mounts_under "$ROOT")" ] || { echo "emulate.sh: mounts left under $ROOT: $(mounts_under "$ROOT")" >&2; FAILED=1; }
timing total_s "$(elapsed "$T0")"

"$PY" "$HERE/report.py" --work "$WORK" --root "$ROOT" --cores "$CORES" --wheel "$WHEEL" ${JSON:+--json "$JSON"} \
    || FAILED=1
exit "$FAILED"
