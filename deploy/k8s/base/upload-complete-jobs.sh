#!/usr/bin/env bash
# Upload each finished job from the worker's images folder to the bucket, whole and only once.
#
# Runs in the `minio/mc` sidecar of every worker pod. The worker writes `<id>.json` first, then
# `<id>-1.png` ... `<id>-N.png` (N = "number_of_images" in the JSON), each under a temporary
# dot-name that is renamed into place. A job is uploaded only when its JSON and all N images
# exist (JSON first, so the web app's folder sees the contract's order), then removed locally so
# the pod's emptyDir stays small. Dot-files (temporary names) are never looked at.
#
# This replaces the old `until [ -f /images/*.png ]` wait, which broke as soon as a job wrote two
# images. It needs only bash, `sleep`, `rm` and `mc` (the minio/mc image has no jq).
# On SIGTERM it makes one last pass and exits: as a native sidecar (an init container with
# restartPolicy: Always) it is stopped only after the worker has exited, so that last pass
# uploads the worker's final job, and a ScaledJob's pod completes.
#
# Environment: MC_TARGET (e.g. `minio/images`, with the alias in MC_HOST_minio), IMAGES_DIR
# (/data/images), SYNC_INTERVAL_S (2). `--once` makes a single pass (for tests and debugging).
set -uo pipefail

images_dir=${IMAGES_DIR:-/data/images}
target=${MC_TARGET:?MC_TARGET must name the bucket, e.g. minio/images}
interval=${SYNC_INTERVAL_S:-2}

log() { echo "upload-complete-jobs: $*" >&2; }

# Print the job's image count from its JSON, or fail if the JSON has none.
image_count() {
    local json
    json=$(<"$1") || return 1
    [[ $json =~ \"number_of_images\"[[:space:]]*:[[:space:]]*([0-9]+) ]] || return 1
    echo "${BASH_REMATCH[1]}"
}

# Upload one job if all its files exist; remove them locally once all are in the bucket.
upload_if_complete() {
    local json=$1 id=${1##*/} count k
    id=${id%.json}
    if ! count=$(image_count "$json") || ((count < 1)); then
        log "skipping $id: no number_of_images in $json"
        return 0
    fi
    local files=("$json")
    for ((k = 1; k <= count; k++)); do
        [[ -f $images_dir/$id-$k.png ]] || return 0  # still being written: next pass
        files+=("$images_dir/$id-$k.png")
    done
    local file
    for file in "${files[@]}"; do
        if ! mc --quiet cp "$file" "$target/" >/dev/null; then
            log "upload of $file failed; retrying on the next pass"
            return 1
        fi
    done
    rm -f -- "${files[@]}"  # the JSON first: a leftover image without it is never re-sent
    log "uploaded $id ($count image(s))"
}

sync_once() {
    local json status=0
    shopt -s nullglob  # no match: no iteration; `*` never matches dot-names (temporary files)
    for json in "$images_dir"/*.json; do
        upload_if_complete "$json" || status=1
    done
    return "$status"
}

if [[ ${1:-} == --once ]]; then
    sync_once
    exit
fi

stopping=0
trap 'stopping=1' TERM INT
log "watching $images_dir, uploading complete jobs to $target every ${interval}s"
while ((!stopping)); do
    sync_once
    sleep "$interval" &
    wait $! || kill $! 2>/dev/null  # `wait` returns at once on SIGTERM; a bare `sleep` would not
done
log "stopping: last pass"
sync_once
