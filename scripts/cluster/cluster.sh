#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1, without containers:
# etcd -> kube-apiserver -> kube-controller-manager + kube-scheduler -> kwok (fake nodes that
# turn pods Running), with binaries from build.sh and state in one directory.
#
#   cluster.sh up    [STATE]   start (or reuse a healthy) cluster; prints on stdout only
#                              `export KUBECONFIG=...` and `export PATH=<bin>:$PATH`:
#                                  eval "$(bash scripts/cluster/cluster.sh up)"
#   cluster.sh down  [STATE]   stop it (by pidfile, reverse order) and remove STATE
#   cluster.sh env   [STATE]   print the two export lines of a running cluster
#   cluster.sh serve STATE     up, then keep the cluster until stdin closes, then down; stdout
#                              closes once the cluster is ready. testkit's Cluster uses this,
#                              so a test process that dies in any way still stops its cluster.
#
# STATE defaults to $ADPIPE_CLUSTER_STATE, else ${ADPIPE_CACHE:-~/.cache/adpipe}/cluster. It
# holds the PKI, the admin kubeconfig, etcd's data, one log and one pidfile per component.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${ADPIPE_CACHE:-$HOME/.cache/adpipe}"
command="${1:-}"
state="$(realpath -m "${2:-${ADPIPE_CLUSTER_STATE:-$cache/cluster}}")"
kubeconfig="$state/admin.kubeconfig"
# Marks a directory this script created, the only kind `down` removes.
marker="$state/.adpipe-cluster"

# Start order; `down` stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
NODE_COUNT=2
# Service and pod ranges that do not overlap each other or the host's usual networks.
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
POD_CIDR=10.244.0.0/16
# Time each stage may take on a loaded 2-core machine (apiserver's first start migrates
# storage and installs every built-in object).
ETCD_TIMEOUT=30
APISERVER_TIMEOUT=120
COMPONENT_TIMEOUT=60
NODES_TIMEOUT=120
SMOKE_TIMEOUT=120
# How long a component may take to exit on SIGTERM before it gets SIGKILL.
STOP_TIMEOUT=15

say() { echo "cluster: $*" >&2; }

# pid_of NAME: the pid of component NAME if it runs from this state dir (a recycled pid
# running something else never matches: every component's command line names the state dir).
pid_of() {
    local pid
    pid="$(cat "$state/$1.pid" 2>/dev/null)" || return 1
    [[ -n "$pid" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$state/" &&
        echo "$pid"
}

kc() { "$bin/kubectl" --kubeconfig="$kubeconfig" --request-timeout=10s "$@"; }

print_env() {
    printf 'export KUBECONFIG=%q\n' "$kubeconfig"
    printf 'export PATH=%q:$PATH\n' "$bin"
}

healthy() {
    local c
    [[ -f "$marker" && -f "$state/bin-dir" ]] || return 1
    bin="$(cat "$state/bin-dir")"
    for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
    [[ "$(kc get --raw=/readyz 2>/dev/null)" == ok ]]
}

stop_all() {
    local i c pid
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        c="${COMPONENTS[i]}"
        if pid="$(pid_of "$c")"; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((t = 0; t < STOP_TIMEOUT * 10; t++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                say "$c (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            say "stopped $c (pid $pid)"
        fi
        rm -f "$state/$c.pid"
    done
}

# remove_state: deletes the state dir, but only one this script made.
remove_state() {
    if [[ -f "$marker" ]]; then
        rm -rf "$state"
    elif [[ -d "$state" ]] && [[ -n "$(ls -A "$state")" ]]; then
        say "$state was not made by cluster.sh; not removing it"
        return 1
    fi
}

# --- up -------------------------------------------------------------------------------------

# The component whose log is shown when up fails.
current=""

on_up_exit() {
    local status=$?
    ((status == 0)) && return
    if [[ -n "$current" && -f "$state/$current.log" ]]; then
        say "$current failed; the end of $state/$current.log:"
        tail -n 30 "$state/$current.log" >&2
    fi
    stop_all
    say "start-up failed; logs kept in $state (cluster.sh down removes them)"
}

launch() {
    local name=$1
    shift
    current="$name"
    # setsid: the component leaves the caller's session, so a Ctrl-C or a closing terminal
    # does not reach it; it is stopped by pidfile only.
    setsid "$bin/$name" "$@" >"$state/$name.log" 2>&1 </dev/null &
    echo $! >"$state/$name.pid"
    started=$SECONDS
}

# wait_until SECONDS WHAT CMD...: polls CMD until it succeeds; fails early if the component
# being started has exited.
wait_until() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [[ -n "$current" ]] && ! pid_of "$current" >/dev/null; then
            say "$current exited while waiting for $what"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            say "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

ready() { say "$1 ready in $((SECONDS - started)) s"; }

free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

gen_certs() {
    local pki="$state/pki"
    mkdir -p "$pki"
    (
        cd "$pki"
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key
        openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=adpipe-local-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
            -addext "subjectKeyIdentifier=hash" -out ca.crt
        # sign NAME SUBJECT EXTENSIONS...: a key and a certificate signed by the CA.
        sign() {
            local name=$1 subject=$2
            shift 2
            openssl ecparam -name prime256v1 -genkey -noout -out "$name.key"
            openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
            printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
                'keyUsage=critical,digitalSignature,keyEncipherment' "$@" >"$name.ext"
            openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
                -sha256 -days 3650 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
        }
        sign apiserver /CN=kube-apiserver extendedKeyUsage=serverAuth \
            "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SERVICE_IP"
        sign admin "/O=system:masters/CN=adpipe-admin" extendedKeyUsage=clientAuth
        # Service-account tokens are signed with this RSA key.
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
        openssl pkey -in sa.key -pubout -out sa.pub
        rm -f ./*.csr ./*.ext ./*.srl
        chmod 600 ./*.key
    )
}

write_kubeconfig() {
    local pki="$state/pki"
    (
        umask 077
        cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: adpipe-local
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: adpipe-admin
  user:
    client-certificate-data: $(base64 -w0 "$pki/admin.crt")
    client-key-data: $(base64 -w0 "$pki/admin.key")
contexts:
- name: adpipe-local
  context: {cluster: adpipe-local, user: adpipe-admin, namespace: default}
current-context: adpipe-local
EOF
    )
}

write_nodes() {
    local i
    for ((i = 0; i < NODE_COUNT; i++)); do
        cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
    done
}

https_ok() { [[ "$(curl -sk --max-time 5 "https://127.0.0.1:$1/healthz")" == ok ]]; }
http_ok() { curl -fsS --max-time 5 "http://127.0.0.1:$1/healthz"; }
apiserver_ready() { [[ "$(kc get --raw=/readyz)" == ok ]]; }
nodes_ready() {
    local ready
    ready="$(kc get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{.spec.taints}{"\n"}{end}')"
    [[ "$(grep -cx 'True ' <<<"$ready")" -eq "$NODE_COUNT" ]]
}

up() {
    if healthy; then
        say "reusing the running cluster in $state"
        print_env
        return
    fi
    if [[ -d "$state" ]]; then
        stop_all
        remove_state
    fi
    mkdir -p "$state"
    touch "$marker"
    trap on_up_exit EXIT
    local begin=$SECONDS
    bin="$(bash "$here/build.sh")"
    echo "$bin" >"$state/bin-dir"
    local stages
    stages="$(dirname "$bin")/kwok/stages.yaml"

    local etcd_port etcd_peer api_port kcm_port sched_port kwok_port
    read -r etcd_port etcd_peer api_port kcm_port sched_port kwok_port <<<"$(free_ports 6)"
    gen_certs
    write_kubeconfig "$api_port"
    local pki="$state/pki"
    begin=$SECONDS

    launch etcd --name=node0 --data-dir="$state/etcd" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" \
        --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
        --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
        --initial-cluster="node0=http://127.0.0.1:$etcd_peer" \
        --unsafe-no-fsync=true --log-level=warn
    wait_until "$ETCD_TIMEOUT" "etcd /readyz" curl -fsS --max-time 5 "http://127.0.0.1:$etcd_port/readyz"
    ready etcd

    # --advertise-address: without it apiserver looks for a default route and fails without
    # one. --endpoint-reconciler-type=none: a loopback address is not a valid endpoint.
    launch kube-apiserver --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address=127.0.0.1 --secure-port="$api_port" --advertise-address=127.0.0.1 \
        --endpoint-reconciler-type=none \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
        --allow-privileged=true --cert-dir="$state/apiserver-certs" --profiling=false --v=1
    wait_until "$APISERVER_TIMEOUT" "kube-apiserver /readyz" apiserver_ready
    ready kube-apiserver

    launch kube-controller-manager --kubeconfig="$kubeconfig" \
        --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
        --bind-address=127.0.0.1 --secure-port="$kcm_port" --leader-elect=false \
        --controllers='*' --service-account-private-key-file="$pki/sa.key" \
        --root-ca-file="$pki/ca.crt" \
        --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
        --profiling=false
    wait_until "$COMPONENT_TIMEOUT" "kube-controller-manager /healthz" https_ok "$kcm_port"
    ready kube-controller-manager

    launch kube-scheduler --kubeconfig="$kubeconfig" \
        --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
        --bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false \
        --profiling=false
    wait_until "$COMPONENT_TIMEOUT" "kube-scheduler /healthz" https_ok "$sched_port"
    ready kube-scheduler

    # Node leases (renewed every 10 s) keep the fake nodes alive for kcm's node lifecycle.
    launch kwok --kubeconfig="$kubeconfig" --config="$stages" --manage-all-nodes=true \
        --node-lease-duration-seconds=40 --cidr="$POD_CIDR" \
        --server-address="127.0.0.1:$kwok_port"
    wait_until "$COMPONENT_TIMEOUT" "kwok /healthz" http_ok "$kwok_port"
    ready kwok

    current=kube-controller-manager
    started=$SECONDS
    write_nodes | kc apply -f - >/dev/null
    wait_until "$NODES_TIMEOUT" "$NODE_COUNT Ready nodes without taints" nodes_ready
    wait_until "$NODES_TIMEOUT" "the default ServiceAccount" kc -n default get serviceaccount default
    ready "$NODE_COUNT nodes"

    # Smoke test: scheduler -> kwok -> ReplicaSet -> Available, then garbage collection.
    started=$SECONDS
    kc -n default create deployment adpipe-smoke --image=registry.invalid/smoke --replicas=2 >/dev/null
    kc -n default rollout status deployment/adpipe-smoke --timeout="${SMOKE_TIMEOUT}s" >/dev/null
    kc -n default delete deployment adpipe-smoke --wait=true >/dev/null
    kc -n default wait --for=delete pod -l app=adpipe-smoke --timeout="${SMOKE_TIMEOUT}s" >/dev/null
    ready "smoke Deployment (rollout and delete)"
    current=""

    local c pid rss=()
    for c in "${COMPONENTS[@]}"; do
        pid="$(pid_of "$c")"
        rss+=("$c $(awk '/^VmRSS/ {printf "%d", $2 / 1024}' "/proc/$pid/status") MiB")
    done
    say "up in $((SECONDS - begin)) s (API on 127.0.0.1:$api_port, state $state)"
    say "RSS: $(IFS=,; echo "${rss[*]}" | sed 's/,/, /g')"
    trap - EXIT
    print_env
}

# --- the other commands -----------------------------------------------------------------------

down() {
    stop_all
    remove_state
    say "down; $state removed"
}

env_cmd() {
    if ! healthy; then
        say "no running cluster in $state: run cluster.sh up"
        exit 1
    fi
    print_env
}

# serve: the cluster lives exactly as long as whoever holds our stdin. Signals are ignored
# so that a Ctrl-C aimed at the test process does not skip the clean-up; only EOF ends it.
serve() {
    trap '' INT TERM HUP
    exec 2>>"$state.log"
    # A subshell with errexit of its own: `if up` would switch errexit off inside up.
    local status=0
    set +e
    (
        set -e
        up
    )
    status=$?
    set -e
    exec 1>&-
    ((status == 0)) || exit "$status"
    cat >/dev/null || true
    down
    rm -f "$state.log"
}

case "$command" in
up) up ;;
down) down ;;
env) env_cmd ;;
serve)
    [[ -n "${2:-}" ]] || { say "serve needs a state dir"; exit 2; }
    serve
    ;;
*)
    echo "usage: $0 {up|down|env|serve} [STATE_DIR]" >&2
    exit 2
    ;;
esac
