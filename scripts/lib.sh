# Shared by scripts/test and scripts/journey: checks and installs, nothing else.

# Fails clearly unless we are root (the lab makes namespaces, bridges and TAP devices).
require_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/$1: needs root (network namespaces, bridges, TAP devices): run 'sudo ./scripts/$1'" >&2
    exit 1
  fi
}

# Installs the Debian packages that are missing, and only those.
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Servers the tests run themselves (unbound) must not start as the host's services: the
    # package scripts ask policy-rc.d, which says no while we install (unless one exists).
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
    fi
    local rc=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    if [ -n "$policy" ]; then rm -f "$policy"; fi
    return "$rc"
  fi
}

# The toolchain is pinned in rust-toolchain.toml; it cannot be downloaded here, only checked.
ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    for d in "$HOME/.cargo/bin" /root/.cargo/bin; do
      [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
    done
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust $(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml) with rustup" >&2
    exit 1
  fi
}

# The packages a lab with kernel hosts and captures needs.
LAB_PACKAGES=(iproute2 ethtool tshark iputils-ping traceroute netcat-openbsd curl openssl sqlite3 dnsutils unbound nsd bird2 nftables)

# A Dubbo 2 client that is not ours, for the netns tests: Apache dubbo-js 2.x from the npm
# registry, pinned by netns-tests/dubbo-client/package-lock.json, run with Node.js.
ensure_dubbo_client() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || ensure_packages nodejs npm
  local d=netns-tests/dubbo-client
  if [ ! -e "$d/node_modules/.package-lock.json" ] || [ "$d/package-lock.json" -nt "$d/node_modules/.package-lock.json" ]; then
    echo "installing the Dubbo test client (npm ci in $d)" >&2
    (cd "$d" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

# A frames-per-second sink: namespace $1 counts the IPv4 frames its device $2 receives (the
# device's rx counter) and drops them at ingress (nftables, netdev family), before IP. What
# the kernel would otherwise do with each (route it, check a UDP checksum, answer "port
# unreachable") runs in the softirq of the sender's write and would be charged to the program
# under test, unevenly: a checksum is checked only where one was sent. ARP still goes through.
sink_drops_ipv4() {
  ip netns exec "$1" nft add table netdev sink
  ip netns exec "$1" nft add chain netdev sink ingress "{ type filter hook ingress device $2 priority 0; }"
  ip netns exec "$1" nft add rule netdev sink ingress meta protocol ip drop
}

# "median lowest highest" of the numbers in $1 (separated by blanks); of an even count, the
# lower middle one.
median_range() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], a[1], a[NR]}'; }

# wrk's output (run with --latency) on stdin -> "requests/s p50 p99", the latencies in ms.
wrk_summary() {
  awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
       /Requests\/sec/ {r=$2} /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)}
       END {printf "%s %.3f %.3f\n", r, p50, p99}'
}

# The paired ratios in $1 (separated by blanks) as a bench reports them: "median (first
# quartile-third quartile)", to two places, by rank (of an even count, the lower middle one).
ratio_summary() {
  printf '%s\n' $1 | sort -g | awk '{a[NR]=$1}
    END {printf "%.2f (%.2f-%.2f)", a[int((NR+1)/2)], a[int((NR+3)/4)], a[int((3*NR+3)/4)]}'
}

# Exits with a one-line error unless $2 is a number of seconds above 0 (the variable $1 of a
# bench: POINT=0.5).
require_seconds() {
  [[ $2 =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v p="$2" 'BEGIN { exit !(p > 0) }' ||
    { echo "$1: seconds, more than 0" >&2; exit 2; }
}

# Paired points, for a machine whose speed drifts within seconds (another tenant, the CPU's
# clock): each point of the program under test runs between two points of the baseline, and
# its ratio is to their mean, so both saw the same second of the machine. A bench reports the
# median of these ratios over its rounds. pair_ratio DUT BASELINE_BEFORE BASELINE_AFTER.
pair_ratio() { awk -v d="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.4f", (a + b > 0 ? 2 * d / (a + b) : 0) }'; }

# Paired rounds of figures that take seconds each (TCP throughput): `paired_rounds N FN BASE
# POINT...` runs N rounds of `FN BASE`, then for each POINT `FN POINT` and `FN BASE` again;
# each POINT's ratio is to the mean of the BASE figures beside it. `FN X` prints one figure.
# They gather in the associative arrays `paired` (by point, BASE's too) and `paired_ratio` (by
# point), which the caller declares: `declare -A paired paired_ratio`.
paired_rounds() {
  local n=$1 fn=$2 base=$3 round point before after v
  shift 3
  for round in $(seq "$n"); do
    before=$($fn "$base"); paired[$base]+=" $before"
    for point in "$@"; do
      v=$($fn "$point"); after=$($fn "$base")
      paired[$point]+=" $v"; paired[$base]+=" $after"
      paired_ratio[$point]+=" $(pair_ratio "$v" "$before" "$after")"
      before=$after
    done
  done
}

# With PERF=DIR set: `perf record` (PERF_ARGS, `-g` by default) of the first process of
# network namespace $1 into DIR/$2.data, until perf_stop. Without PERF, nothing.
perf_pid=
perf_start() {
  perf_pid=
  [ -n "${PERF:-}" ] || return 0
  mkdir -p "$PERF"
  perf record ${PERF_ARGS:--g} -o "$PERF/$2.data" -p "$(ip netns pids "$1" | head -1)" >/dev/null 2>&1 &
  perf_pid=$!
}
perf_stop() {
  [ -n "${perf_pid:-}" ] || return 0
  kill -INT "$perf_pid"; wait "$perf_pid" || true
  perf_pid=
}
