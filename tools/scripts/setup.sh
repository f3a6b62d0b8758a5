# Shared set-up for tools/run and tools/test: sourced, not run.
# Installs the Debian packages the project needs when they are missing, so both commands
# work on a fresh Debian machine that has only the Rust toolchain.

# Debian packages needed at run or test time (none yet: svrkit-codegen parses IDL with
# protox, so protoc is not needed).
SVRKIT_APT_PACKAGES=()

svrkit_setup() {
  local missing=()
  local pkg
  for pkg in "${SVRKIT_APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; return 1; }
}
