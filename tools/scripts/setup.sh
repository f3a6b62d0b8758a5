# Shared set-up for tools/run and tools/test: sourced, not run.
# Installs the Debian packages the project needs when they are missing, so both commands
# work on a fresh Debian machine that has only the Rust toolchain.

# Debian packages needed to build and test: protoc for the etcd client's generated code
# (service authors never need it: svrkit-codegen parses IDL with protox) with
# libprotobuf-dev for the well-known types it imports (google/protobuf/descriptor.proto:
# only recommended by protobuf-compiler, and recommendations are not installed here), and
# a real etcd server, which the discovery tests start on loopback.
SVRKIT_APT_PACKAGES=(protobuf-compiler libprotobuf-dev etcd-server)

# svrkit_setup [PACKAGE...]: the packages above and any given (tools/test adds Debian's
# prometheus, for promtool).
svrkit_setup() {
  local missing=()
  local pkg
  for pkg in "${SVRKIT_APT_PACKAGES[@]}" "$@"; do
    dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; return 1; }
  svrkit_check_rust
}

# The oldest Rust the workspace builds with (Cargo.toml's rust-version): said before
# anything is built, rather than failing deep inside a dependency's build.
SVRKIT_MIN_RUST=1.90
svrkit_check_rust() {
  local have
  have=$(rustc --version 2>/dev/null | awk '{print $2}')
  if [ -z "$have" ]; then
    echo "rustc not found: install the Rust toolchain (rustup)" >&2
    return 1
  fi
  if [ "$(printf '%s\n%s\n' "$SVRKIT_MIN_RUST" "${have%%-*}" | sort -V | head -n1)" != "$SVRKIT_MIN_RUST" ]; then
    echo "Rust $have is too old: svrkit needs $SVRKIT_MIN_RUST or newer (rustup update stable)" >&2
    return 1
  fi
}

# svrkit_kubernetes_validate: kubernetes-validate (PyPI; it bundles Kubernetes' schemas,
# so validating needs no cluster and no network) in a virtualenv of its own, made once
# under the cache directory; exports SVRKIT_KUBERNETES_VALIDATE, which the rendering
# test runs.
SVRKIT_KUBERNETES_VALIDATE_VERSION=1.37.0
svrkit_kubernetes_validate() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/svrkit/venv-kubernetes-validate"
  if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$SVRKIT_KUBERNETES_VALIDATE_VERSION"; then
    echo "installing kubernetes-validate $SVRKIT_KUBERNETES_VALIDATE_VERSION (PyPI) into $venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q "kubernetes-validate==$SVRKIT_KUBERNETES_VALIDATE_VERSION" || return 1
  fi
  export SVRKIT_KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
}

# svrkit_grpc_python: grpcio and its tools (PyPI) in a virtualenv of their own, made once
# under the cache directory; exports SVRKIT_GRPC_PYTHON, the Python the gRPC interop test
# runs tools/grpc-python/interop.py with.
SVRKIT_GRPC_PYTHON_PACKAGES="grpcio==1.85.4 grpcio-tools==1.85.4 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 grpcio-status==1.85.3"
svrkit_grpc_python() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/svrkit/venv-grpc"
  local stamp="$venv/.svrkit-packages"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$SVRKIT_GRPC_PYTHON_PACKAGES" ]; then
    echo "installing grpcio and its tools (PyPI) into $venv"
    # shellcheck disable=SC2086 # the package list is split on purpose
    python3 -m venv "$venv" && "$venv/bin/pip" install -q $SVRKIT_GRPC_PYTHON_PACKAGES || return 1
    echo "$SVRKIT_GRPC_PYTHON_PACKAGES" >"$stamp"
  fi
  export SVRKIT_GRPC_PYTHON="$venv/bin/python"
}
