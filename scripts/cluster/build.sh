#!/usr/bin/env bash
# Builds, once, the binaries of the local Kubernetes control plane that cluster.sh runs:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3), kwok (sigs.k8s.io/kwok) and helm (helm.sh/helm/v3), all
# from the Go module proxy, plus kwok's stage definitions. Everything lands in
#
#   ${ADPIPE_CACHE:-~/.cache/adpipe}/k8s/<versions>/bin/     the binaries
#   ${ADPIPE_CACHE:-~/.cache/adpipe}/k8s/<versions>/kwok/    stages.yaml, copied from the module
#   ${ADPIPE_CACHE:-~/.cache/adpipe}/k8s/<versions>/build/   the wrapper Go modules
#   ${ADPIPE_CACHE:-~/.cache/adpipe}/k8s/<versions>/logs/    build output and /usr/bin/time -v
#
# A binary whose `--version` already reports the wanted version is not rebuilt, so a second
# run takes a second. Prints the bin directory on stdout, progress on stderr.
#
# Why wrapper modules: k8s.io/kubernetes and etcd's server module have `replace` directives,
# so `go install pkg@version` refuses them. The k8s wrapper replaces every staging module
# (read from the tag's own go.mod) with its published v0.X.Y tag; etcd gets its own wrapper
# so that Kubernetes' requirements do not move its dependencies.
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0

cache="${ADPIPE_CACHE:-$HOME/.cache/adpipe}"
key="k8s${K8S_VERSION#v}-etcd${ETCD_VERSION#v}-kwok${KWOK_VERSION#v}-helm${HELM_VERSION#v}"
root="$cache/k8s/$key"
bin="$root/bin"
logs="$root/logs"
stages="$root/kwok/stages.yaml"

# The kwok stages kwokctl uses with node leases: nodes turn Ready and stay so through leases,
# pods turn Running/Ready, Job pods Succeed, deleted pods go away.
KWOK_STAGE_FILES=(
    node/fast/node-initialize.yaml
    node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
    pod/fast/pod-ready.yaml
    pod/fast/pod-complete.yaml
    pod/fast/pod-delete.yaml
)

say() { echo "build: $*" >&2; }

# version_ok NAME: whether bin/NAME exists and reports the version this script builds.
version_ok() {
    local out
    [[ -x "$bin/$1" ]] || return 1
    case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler)
        out="$("$bin/$1" --version 2>/dev/null)" && [[ "$out" == "Kubernetes $K8S_VERSION" ]] ;;
    kubectl)
        out="$("$bin/kubectl" version --client 2>/dev/null)" && [[ "$out" == *"Client Version: $K8S_VERSION"* ]] ;;
    etcd)
        out="$("$bin/etcd" --version 2>/dev/null)" && [[ "$out" == *"etcd Version: ${ETCD_VERSION#v}"* ]] ;;
    kwok)
        out="$("$bin/kwok" --version 2>/dev/null)" && [[ "$out" == *"${KWOK_VERSION}"* ]] ;;
    helm)
        out="$("$bin/helm" version --short 2>/dev/null)" && [[ "$out" == "${HELM_VERSION}"* ]] ;;
    esac
}

# measure NAME CMD...: runs CMD under /usr/bin/time -v (when present), its output in
# logs/NAME.log, and reports wall time and peak RSS of the largest process.
measure() {
    local name=$1 start=$SECONDS
    shift
    say "building $name (output: $logs/$name.log)"
    local timer=()
    [[ -x /usr/bin/time ]] && timer=(/usr/bin/time -v -o "$logs/$name.time")
    if ! "${timer[@]}" "$@" >"$logs/$name.log" 2>&1; then
        say "building $name failed; the end of $logs/$name.log:"
        tail -n 40 "$logs/$name.log" >&2
        exit 1
    fi
    local rss=""
    [[ -f "$logs/$name.time" ]] &&
        rss="$(awk -F': ' '/Maximum resident/ {printf ", max RSS %d MiB", $2 / 1024}' "$logs/$name.time")"
    say "built $name in $((SECONDS - start)) s$rss"
}

du_mib() { du -sm "$1" 2>/dev/null | cut -f1 || echo 0; }

build_kubernetes() {
    local dir="$root/build/k8s" staging_version="v0.${K8S_VERSION#v1.}" minor
    minor="$(cut -d. -f2 <<<"$K8S_VERSION")"
    rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
    go mod init adpipe-k8s-bins 2>/dev/null
    go mod download "k8s.io/kubernetes@$K8S_VERSION"
    local kmod replaces=() m
    kmod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
    for m in $(sed -n -E 's#^[[:space:]]*(replace[[:space:]]+)?(k8s\.io/[^[:space:]]+)[[:space:]]+=>[[:space:]]+\./staging/.*#\2#p' "$kmod"); do
        replaces+=("-replace=$m=$m@$staging_version")
    done
    ((${#replaces[@]} > 0)) || { say "no staging modules found in $kmod"; exit 1; }
    say "k8s.io/kubernetes $K8S_VERSION: ${#replaces[@]} staging modules replaced by $staging_version"
    go mod edit "${replaces[@]}"
    local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl) pkgs=() c
    for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    go get -tool "${pkgs[@]/%/@$K8S_VERSION}" 2>"$logs/k8s-get.log" ||
        { cat "$logs/k8s-get.log" >&2; exit 1; }
    # What hack/lib/version.sh stamps, so /version and `kubectl version` say $K8S_VERSION.
    local v="" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        v+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        v+=" -X $p.gitTreeState=clean -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    done
    measure kubernetes go build -trimpath -ldflags "-s -w$v" -o "$bin/" "${pkgs[@]}"
}

build_etcd() {
    local dir="$root/build/etcd"
    rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
    go mod init adpipe-etcd-bin 2>/dev/null
    go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>"$logs/etcd-get.log" ||
        { cat "$logs/etcd-get.log" >&2; exit 1; }
    measure etcd go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
    measure kwok env GOBIN="$bin" go install -trimpath -ldflags "-s -w" \
        "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

build_helm() {
    # helm.sh/helm/v3 has no replace directives, so `go install` works; the ldflags are those
    # of helm's Makefile for a release tag (version, and the Kubernetes version that
    # `.Capabilities` and the deprecation lint assume: its client-go minor).
    local pkg=helm.sh/helm/v3 client_go minor
    client_go="$(go mod download -json "$pkg@$HELM_VERSION" | sed -n -E 's/.*"GoMod": "(.*)",?/\1/p')"
    minor="$(sed -n -E 's#^[[:space:]]*k8s\.io/client-go v0\.([0-9]+)\..*#\1#p' "$client_go" | head -n 1)"
    measure helm env GOBIN="$bin" go install -trimpath -ldflags "-s -w \
        -X $pkg/internal/version.version=$HELM_VERSION -X $pkg/internal/version.metadata= \
        -X $pkg/internal/version.gitTreeState=clean \
        -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=$minor \
        -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=$minor" \
        "$pkg/cmd/helm@$HELM_VERSION"
}

copy_kwok_stages() {
    local src f tmp="$stages.tmp"
    src="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n -E 's/.*"Dir": "(.*)",?/\1/p')"
    mkdir -p "$(dirname "$stages")"
    for f in "${KWOK_STAGE_FILES[@]}"; do
        echo '---'
        cat "$src/kustomize/stage/$f"
    done >"$tmp"
    mv "$tmp" "$stages"
    say "kwok stages: $stages"
}

main() {
    local missing=() c
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm; do
        version_ok "$c" || missing+=("$c")
    done
    if ((${#missing[@]} == 0)) && [[ -s "$stages" ]]; then
        say "all binaries present in $bin"
        echo "$bin"
        return
    fi

    command -v go >/dev/null || { say "go is not installed (Go >= 1.26 is needed)"; exit 1; }
    mkdir -p "$bin" "$logs"
    # Two builds at once (make cluster-up and a test) would race on the wrapper modules.
    exec 9>"$root/.lock"
    flock 9
    export CGO_ENABLED=0
    local modcache gocache mod_before cache_before start=$SECONDS
    modcache="$(go env GOMODCACHE)"
    gocache="$(go env GOCACHE)"
    mod_before="$(du_mib "$modcache")"
    cache_before="$(du_mib "$gocache")"
    say "building ${missing[*]:-nothing} into $bin; the first build takes 15-30 min on 2 cores"

    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
        if ! version_ok "$c"; then
            build_kubernetes
            break
        fi
    done
    version_ok etcd || build_etcd
    version_ok kwok || build_kwok
    version_ok helm || build_helm
    [[ -s "$stages" ]] || copy_kwok_stages

    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm; do
        version_ok "$c" || { say "$bin/$c does not report the expected version after the build"; exit 1; }
    done
    say "done in $((SECONDS - start)) s; GOMODCACHE +$(($(du_mib "$modcache") - mod_before)) MiB," \
        "GOCACHE +$(($(du_mib "$gocache") - cache_before)) MiB; binaries:"
    (cd "$bin" && du -m -- * | sed 's/^/build:   MiB /' >&2)
    echo "$bin"
}

main "$@"
