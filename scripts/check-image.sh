#!/usr/bin/env bash
# Checks the image `make image` built (target/image/strapi-webhook-operator.oci.tar, or the
# archive given) the way a cluster runs it, with no container engine:
#   - its config: uid 65532, the entrypoint, the OCI labels, and a size under 25 MiB;
#   - it is unpacked (umoci) and the binary runs inside that root filesystem alone (chroot),
#     with the receiver Deployment's securityContext read from the rendered chart: its uid,
#     gid and fsGroup, a read-only root, every capability dropped (bounding set included), no
#     privilege escalation (no_new_privs); its volumes (the queue, /tmp) as writable folders
#     owned by fsGroup, like emptyDir; and in a network namespace of its own (loopback only);
#   - `--version` prints the crate version; `crd` writes exactly crds/*.yaml;
#   - the receiver, started with the chart's arguments and a file configuration, answers
#     /readyz 200, accepts one signed event (200), stores it in the queue volume and delivers it
#     to a loopback sink named by a host name that only the mounted /etc/hosts knows (the static
#     musl binary resolves without NSS), then exits 0 on SIGTERM.
# Not reproduced: the RuntimeDefault seccomp profile (no runtime here to load it).
# Runs alone (as root, for the namespaces and chroot) or as the `==> image` step of make test.
set -euo pipefail
script="$(realpath "$0")"
cd "$(dirname "$0")/.."

archive="$(realpath "${1:-target/image/strapi-webhook-operator.oci.tar}")"
chart=charts/strapi-webhook-operator
helm=.tools/bin/helm
python=.tools/venv/bin/python
size_limit_mib=25

fail() { echo "FAIL: $*" >&2; exit 1; }

# --- Inside the namespaces: everything below runs after the re-exec at the end. ---
inside() {
  local work="$1" root="$1/bundle/rootfs"
  ip link set lo up
  mount --make-rprivate /
  # Mount points the runtime would create; then the root goes read-only.
  mkdir -p "$root/proc"
  touch "$root/etc/hosts"
  mount --bind "$root" "$root"
  mount -o remount,bind,ro "$root"
  mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
  # The pod's volumes: writable, group-owned by fsGroup with the setgid bit, as the kubelet
  # makes an emptyDir for a pod with an fsGroup.
  local path
  while read -r path; do
    mkdir -p "$work/volumes$path"
    chown "0:$FS_GROUP" "$work/volumes$path"
    chmod 2775 "$work/volumes$path"
    mount --bind "$work/volumes$path" "$root$path"
  done < "$work/mounts"
  # The kubelet mounts /etc/hosts; the sink's host name is only in it.
  printf '127.0.0.1 localhost\n127.0.0.1 sink.image-check.test\n' > "$work/hosts"
  mount --bind -o ro "$work/hosts" "$root/etc/hosts"

  local capsh all_caps
  capsh="$(command -v capsh)"
  all_caps="$(capsh --print | sed -n 's/^Bounding set =//p')"
  # capsh applies its options in order: chroot, drop the whole bounding set (while still root),
  # switch gid, groups and uid (which clears the permitted and effective sets), clear the
  # inheritable and ambient sets, set no_new_privs, then exec the binary with a clean
  # environment.
  local privs=()
  [[ "$NO_NEW_PRIVS" == true ]] && privs=(--no-new-privs)
  # `in_image [NAME=value…] -- [argument…]`: sets IN_IMAGE to the command line that runs the
  # binary that way; env and capsh exec, so the binary keeps the pid the shell started.
  in_image() {
    local environment=()
    while [[ "$1" != -- ]]; do environment+=("$1"); shift; done
    shift
    IN_IMAGE=(env -i "${environment[@]}" "$capsh" --chroot="$root" --drop="$all_caps"
      --gid="$RUN_GID" --groups="$FS_GROUP" --uid="$RUN_UID" --caps= --noamb "${privs[@]}"
      --shell=/usr/local/bin/strapi-webhook-operator -- "$@")
  }

  echo "==> image: --version"
  local version_out
  in_image -- --version
  version_out="$("${IN_IMAGE[@]}")" || fail "--version failed"
  [[ "$version_out" == "strapi-webhook-operator $VERSION" ]] \
    || fail "--version printed '$version_out', expected 'strapi-webhook-operator $VERSION'"

  echo "==> image: crd"
  mkdir "$work/volumes/tmp/crds" && chown "$RUN_UID:$RUN_GID" "$work/volumes/tmp/crds"
  in_image -- crd --output-dir /tmp/crds
  "${IN_IMAGE[@]}" || fail "crd failed"
  diff -r crds "$work/volumes/tmp/crds" >&2 || fail "crd in the image differs from crds/"

  echo "==> image: receiver on a file configuration"
  start_sink "$work"
  write_manifests "$work/volumes/tmp/manifests.yaml"
  in_image RUST_LOG=info RECEIVER_ADMIN_TOKEN=image-check-admin-token-0123456789 -- \
    "${RECEIVER_ARGS[@]}" --config-source=file:/tmp/manifests.yaml --allow-loopback-sinks
  "${IN_IMAGE[@]}" > "$work/receiver.log" 2>&1 &
  local pid=$!
  trap 'kill $pid $SINK_PID 2>/dev/null || true' EXIT
  wait_ready "$pid" "$work"
  check_process "$pid" "$root"

  local status
  status="$(curl -s -o "$work/post.out" -w '%{http_code}' \
    -H 'content-type: application/json' -H 'x-strapi-webhook-secret: image-check-shared-secret' \
    --data '{"event":"entry.create","createdAt":"2026-11-29T00:00:00.000Z","model":"article","uid":"api::article.article","entry":{"id":1,"documentId":"doc1","title":"From the image"}}' \
    http://127.0.0.1:8080/v1/instances/cms/strapi)"
  [[ "$status" == 200 ]] || fail "the event got $status: $(cat "$work/post.out")"
  [[ -f "$work/volumes/var/lib/strapi-webhook-operator/queue.db" ]] \
    || fail "no queue.db in the queue volume"
  [[ "$(stat -c %u "$work/volumes/var/lib/strapi-webhook-operator/queue.db")" == "$RUN_UID" ]] \
    || fail "queue.db is not owned by uid $RUN_UID"
  for _ in $(seq 1 200); do
    grep -q 'From the image' "$work/sink.received" 2>/dev/null && break
    sleep 0.1
  done
  grep -q 'From the image' "$work/sink.received" 2>/dev/null \
    || { cat "$work/receiver.log" >&2; fail "the sink at sink.image-check.test never got the event"; }
  echo "    event accepted (200), stored in the queue volume, delivered to http://sink.image-check.test"

  kill -TERM "$pid"
  local code=0
  wait "$pid" || code=$?
  trap - EXIT
  [[ "$code" == 0 ]] || { cat "$work/receiver.log" >&2; fail "the receiver exited $code on SIGTERM"; }
  kill "$SINK_PID" 2>/dev/null || true
}

# A loopback HTTP sink that appends each body it gets to <work>/sink.received.
start_sink() {
  python3 - "$1/sink.received" <<'PY' &
import http.server, sys
out = sys.argv[1]
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with open(out, "ab") as f:
            f.write(body + b"\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", 8099), Sink).serve_forever()
PY
  SINK_PID=$!
  for _ in $(seq 1 100); do
    curl -s -o /dev/null http://127.0.0.1:8099/ && return
    sleep 0.05
  done
  fail "the loopback sink did not start"
}

write_manifests() {
  cat > "$1" <<'YAML'
apiVersion: v1
kind: Secret
metadata: { name: strapi-strapi-webhook-secret, namespace: cms }
stringData: { secret: image-check-shared-secret }
---
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiInstance
metadata: { name: strapi, namespace: cms }
spec:
  url: http://127.0.0.1:1337
  auth: { apiToken: { name: strapi-admin, key: token } }
---
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiWebhook
metadata: { name: site, namespace: cms, generation: 1 }
spec:
  instanceRef: { name: strapi }
  events: [entry.create]
  sinks:
    - name: crm
      http: { url: "http://sink.image-check.test:8099/hook" }
  routes:
    - { name: all, sink: crm }
YAML
  chmod 0644 "$1"
}

wait_ready() {
  local receiver="$1" work="$2"
  for _ in $(seq 1 300); do
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9091/readyz)" == 200 ]]; then
      echo "    /readyz 200"
      return
    fi
    kill -0 "$receiver" 2>/dev/null || { cat "$work/receiver.log" >&2; fail "the receiver exited before it was ready"; }
    sleep 0.1
  done
  cat "$work/receiver.log" >&2
  fail "the receiver was not ready within 30 s"
}

# What the kernel says about the running receiver, against the securityContext.
check_process() {
  local pid="$1" root="$2" status
  status="$(cat "/proc/$pid/status")"
  field() { awk -v key="$1:" '$1 == key { $1 = ""; sub(/^ /, ""); print }' <<< "$status"; }
  # Real, effective, saved and filesystem ids.
  [[ "$(field Uid)" == "$RUN_UID $RUN_UID $RUN_UID $RUN_UID" ]] || fail "Uid is $(field Uid)"
  [[ "$(field Gid)" == "$RUN_GID $RUN_GID $RUN_GID $RUN_GID" ]] || fail "Gid is $(field Gid)"
  [[ "$(field Groups)" == "$FS_GROUP" ]] || fail "Groups is $(field Groups)"
  local set
  for set in CapInh CapPrm CapEff CapBnd CapAmb; do
    [[ "$(field "$set")" == 0000000000000000 ]] || fail "$set is $(field "$set"), expected none"
  done
  if [[ "$NO_NEW_PRIVS" == true ]]; then
    [[ "$(field NoNewPrivs)" == 1 ]] || fail "NoNewPrivs is $(field NoNewPrivs)"
  fi
  [[ "$(readlink "/proc/$pid/root")" == "$root" ]] || fail "the receiver's root is $(readlink "/proc/$pid/root")"
  # The receiver's own view of its mounts: `/` is read-only, the volumes are not.
  local root_options
  root_options="$(awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | tail -1)"
  if [[ "$READ_ONLY_ROOT" == true ]]; then
    [[ ",$root_options," == *,ro,* ]] || fail "the root is mounted $root_options, not read-only"
  fi
  echo "    uid $RUN_UID gid $RUN_GID groups $FS_GROUP, no capabilities, NoNewPrivs $(field NoNewPrivs), root $root_options, loopback only"
}

if [[ "${1:-}" == __inside ]]; then
  shift
  read -r -a RECEIVER_ARGS <<< "$RECEIVER_ARGS_LINE"
  inside "$@"
  exit 0
fi

# --- Outside: unpack, read the image config and the chart, then enter the namespaces. ---
[[ "$(id -u)" == 0 ]] || fail "needs root (namespaces, chroot, uid switch)"
for tool in skopeo umoci capsh unshare curl jq python3 "$helm" "$python"; do
  command -v "$tool" >/dev/null || fail "$tool is missing: run scripts/test-deps.sh"
done
[[ -f "$archive" ]] || fail "no image at $archive: run \`make image\`"

VERSION="$(cargo metadata --no-deps --format-version 1 \
  | jq -r '.packages[] | select(.name == "strapi-webhook-operator") | .version')"
work="$(mktemp -d /tmp/check-image.XXXXXX)"
# The mounts live in the namespace of the inner run and end with it.
trap 'rm -rf "$work"' EXIT

echo "==> image: $archive"
size_bytes="$(stat -c %s "$archive")"
size_mib="$(awk -v b="$size_bytes" 'BEGIN { printf "%.1f", b / 1048576 }')"
echo "    size $size_mib MiB (archive, compressed layers)"
(( size_bytes < size_limit_mib * 1048576 )) || fail "the image is $size_mib MiB, over $size_limit_mib MiB"

skopeo copy --quiet "oci-archive:$archive" "oci:$work/layout:image"
config="$(skopeo inspect --config "oci:$work/layout:image")"
jq -e --arg v "$VERSION" '
  .config.User == "65532:65532"
  and .config.Entrypoint == ["/usr/local/bin/strapi-webhook-operator"]
  and .config.Labels["org.opencontainers.image.version"] == $v
  and (.config.Labels["org.opencontainers.image.revision"] | test("^[0-9a-f]{40}$"))
  and .config.Labels["org.opencontainers.image.licenses"] == "Apache-2.0"
  and (.config.Labels["org.opencontainers.image.source"] | startswith("https://"))' \
  <<< "$config" > /dev/null || { jq .config <<< "$config" >&2; fail "image config (user, entrypoint, labels)"; }
umoci unpack --image "$work/layout:image" "$work/bundle" > /dev/null
[[ "$(stat -c %u:%g "$work/bundle/rootfs/var/lib/strapi-webhook-operator")" == 65532:65532 ]] \
  || fail "the queue folder in the image is not owned by 65532"

# The receiver Deployment as the chart renders it with default values; its image is this one
# once pushed as docs/install.md says (same tag).
"$helm" template swo "$chart" --show-only templates/receiver-deployment.yaml > "$work/receiver.yaml"
chart_image="$(sed -n 's/^ *image: *//p' "$work/receiver.yaml")"
[[ "$chart_image" == */strapi-webhook-operator:"$VERSION" ]] \
  || fail "the chart's default image $chart_image does not carry the tag $VERSION that make image writes"
settings="$("$python" - "$work/receiver.yaml" "$work/mounts" <<'PY'
import shlex, sys, yaml
pod = yaml.safe_load(open(sys.argv[1]))["spec"]["template"]["spec"]
container = next(c for c in pod["containers"] if c["name"] == "receiver")
pod_ctx, ctx = pod.get("securityContext", {}), container.get("securityContext", {})
def setting(key):
    return ctx.get(key, pod_ctx.get(key))
drop = ctx.get("capabilities", {}).get("drop", [])
add = ctx.get("capabilities", {}).get("add", [])
if drop != ["ALL"] or add:
    sys.exit(f"capabilities are drop={drop} add={add}; the check runs with none")
if not setting("runAsNonRoot") or setting("runAsUser") != 65532:
    sys.exit("the chart does not make the receiver run as the image's non-root uid 65532")
if ctx.get("readOnlyRootFilesystem") is not True or ctx.get("allowPrivilegeEscalation") is not False:
    sys.exit("the chart must set readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
with open(sys.argv[2], "w") as mounts:
    for mount in container.get("volumeMounts", []):
        mounts.write(mount["mountPath"] + "\n")
values = {
    "RUN_UID": setting("runAsUser"),
    "RUN_GID": setting("runAsGroup") or setting("runAsUser"),
    "FS_GROUP": pod_ctx.get("fsGroup") or setting("runAsGroup") or setting("runAsUser"),
    "READ_ONLY_ROOT": str(bool(ctx.get("readOnlyRootFilesystem"))).lower(),
    "NO_NEW_PRIVS": str(ctx.get("allowPrivilegeEscalation") is False).lower(),
    "RECEIVER_ARGS_LINE": " ".join(container["args"]),
}
for key, value in values.items():
    print(f"export {key}={shlex.quote(str(value))}")
PY
)"
eval "$settings"
export VERSION

unshare --net --mount --fork -- "$script" __inside "$work"
echo "==> image: all checks passed ($size_mib MiB)"
