#!/usr/bin/env bash
# Build a Kubernetes v1.20.2 control plane (kube-apiserver, kube-scheduler,
# kube-controller-manager) from Debian's `kubernetes` source package, for the k8s_real test tier
# (tests/k8s_real). Debian ships only kubectl from that package, and no image or download is
# needed: the vendored tree builds with Debian's Go after three fixes (GOPATH mode, the generated
# OpenAPI package, Debian's reflect2/json-iterator instead of the vendored ones, which crash the
# apiserver under Go 1.19). Needs root for apt-get; ~14 min cold on one core.
#
# The binaries are cached outside the clone, keyed by version: a second run, or a fresh clone on
# the same machine, finds them and returns at once. Prints the bin folder on its last line.
#
#   bash scripts/build_k8s.sh            # -> ~/.cache/irv2/k8s/v1.20.2/bin
#   JOBS=2 bash scripts/build_k8s.sh     # go build -p 2
set -euo pipefail
VERSION=v1.20.2
CACHE="${IRV2_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/irv2/k8s}"
OUT="$CACHE/$VERSION/bin"
BINARIES=(kube-apiserver kube-scheduler kube-controller-manager)
have_all() { for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || return 1; done; }
if have_all && command -v etcd >/dev/null; then
    echo "$OUT"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "scripts/build_k8s.sh: needs root and apt-get (Debian) to fetch the source and Go" >&2
    exit 1
fi
WORK="$CACHE/$VERSION/build"
export DEBIAN_FRONTEND=noninteractive
if [ ! -f /etc/apt/sources.list.d/debian-src.sources ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
        > /etc/apt/sources.list.d/debian-src.sources
fi
apt-get update -qq
apt-get install -y -qq golang-go etcd-server golang-github-modern-go-reflect2-dev \
    golang-github-json-iterator-go-dev >/dev/null
mkdir -p "$WORK" "$OUT"
cd "$WORK"
[ -f kubernetes_1.20.5+really1.20.2.orig.tar.gz ] || apt-get source --download-only kubernetes >/dev/null
rm -rf kubernetes-1.20.2
tar xzf kubernetes_1.20.5+really1.20.2.orig.tar.gz
SRC="$WORK/kubernetes-1.20.2"
# (3) the vendored reflect2 1.0.1 makes the apiserver segfault in mapiterinit under Go 1.19
for d in modern-go/reflect2 json-iterator/go; do
    rm -rf "$SRC/vendor/github.com/$d"
    cp -a "/usr/share/gocode/src/github.com/$d" "$SRC/vendor/github.com/$d"
done
# (1) GOPATH mode: module mode wants go.mod updates the vendored tree cannot get offline
export GOPATH="$WORK/gopath" GO111MODULE=off CGO_ENABLED=0 GOFLAGS=
export GOCACHE="$CACHE/go-build"
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$SRC" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"
# (2) pkg/generated/openapi, which the release tarball leaves to `make`
go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
DIRS=$(find pkg cmd plugin vendor/k8s.io -follow -type f -name '*.go' ! -name '*_test.go' 2>/dev/null \
    | grep -vE '^vendor/k8s.io/(code-generator|sample-apiserver)/|/testdata/|^pkg/generated/' \
    | xargs grep -l '^// *+k8s:openapi-gen=' | xargs -n1 dirname | sort -u \
    | sed 's#^#k8s.io/kubernetes/#' | paste -sd,)
"$WORK/openapi-gen" -i "$DIRS" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h hack/boilerplate/boilerplate.generatego.txt -r "$WORK/openapi-violations.report"
LD="-s -w"
for p in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
    k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    LD="$LD -X $p.gitVersion=$VERSION -X $p.gitMajor=1 -X $p.gitMinor=20 -X $p.gitTreeState=clean"
done
TMP_OUT="$(mktemp -d "$CACHE/$VERSION/bin.XXXXXX")"
go build -p "${JOBS:-1}" -ldflags "$LD" -o "$TMP_OUT/" ./cmd/kube-apiserver ./cmd/kube-scheduler \
    ./cmd/kube-controller-manager
mv "$TMP_OUT"/* "$OUT/"   # a build cut short never looks complete
rmdir "$TMP_OUT"
rm -rf "$SRC" "$GOPATH"   # 280 MB of source; the Go cache stays for a fast rebuild
have_all
echo "$OUT"
