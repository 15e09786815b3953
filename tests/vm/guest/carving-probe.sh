#!/bin/bash
# Carving a soft-reserved (hmem) dax region by hand on a real Linux 6.12: the wrong and the right
# writes of daxctl create-device / destroy-device, each answer recorded so that the fake kernel's
# (tests/fakekernel/carving_facts.py: EXPECTED, EXPECTED_READS, EXPECTED_MODES) can be compared.
#
# Meant as a lab Scenario's script (lib.sh sourced: lab_try_write, $LAB_OUT), with one 512 MiB
# hmem region (HmemSpec(size_mib=512)), its daxR.0 bound to kmem, no daxd acting on it, and
# preferably memhp_default_state=offline (blocks onlined to Normal may refuse to go offline).
# Results: $LAB_OUT/carving.txt "<probe>: <ok|ERRNO>" a write; carving-reads.txt "<name>: <value>"
# (device names as their id in the region, ranges as 0xOFFSET+0xLENGTH from the region's start);
# carving-uevents.txt, the kernel's uevents meanwhile; writes.tsv as every lab_try_write.
# The probe names are the keys of carving_facts.py; keep both in the same order.
set -uo pipefail
if ! declare -F lab_try_write > /dev/null; then . /lab/in/lib.sh; fi

DAX=/sys/bus/dax
MIB=$((1 << 20))
lab_wait_booted
udevadm settle

DEV=$(basename "$(ls -d /sys/devices/platform/hmem.*/dax*.0 | head -n 1)")
R=${DEV#dax}
R=${R%%.*}
REGION=$(dirname "$(readlink -f "$DAX/devices/$DEV")")/dax_region
BASE=$(($(cat "$DAX/devices/$DEV/resource")))
SIZE=$(cat "$REGION/size")
HALF=$((SIZE / 2))
QUARTER=$((SIZE / 4))
D1=dax$R.1
D2=dax$R.2
echo "region $R at $(printf '%#x' "$BASE"), $SIZE bytes, $DEV"

udevadm monitor --kernel > "$LAB_OUT/carving-uevents.txt" 2>&1 &
MONITOR=$!
sleep 1

errname() {
    python3 -c 'import errno, os, sys
names = {os.strerror(c): n for c, n in errno.errorcode.items()}
print(names.get(sys.argv[1], sys.argv[1]))' "$1"
}

# probe NAME PATH VALUE: write VALUE to PATH (lab_try_write) and record NAME: ok or the errno.
probe() {
    local out answer
    out=$(lab_try_write "$2" "$3")
    echo "$out"
    answer=${out##*: }
    if [ "$answer" = OK ]; then answer=ok; else answer=$(errname "$answer"); fi
    echo "$1: $answer" >> "$LAB_OUT/carving.txt"
}
region() { probe "$1" "$REGION/$2" "$3"; }
device() { probe "$1" "$DAX/devices/$2/$3" "$4"; }

# seen NAME VALUE: record a value read back.
seen() { echo "$1: $2" | tee -a "$LAB_OUT/carving-reads.txt"; }
id_of() { [ -n "$1" ] && echo "${1#dax"$R".}"; }
ranges() {
    local m s e out=()
    for m in $(ls -d "$DAX/devices/$1"/mapping[0-9]* 2> /dev/null | sort -V); do
        s=$(($(cat "$m/start")))
        e=$(($(cat "$m/end")))
        out+=("$(printf '0x%x+0x%x' $((s - BASE)) $((e - s + 1)))")
    done
    local IFS=,
    echo "${out[*]}"
}

# offline NAME DEV: offline the device's online blocks; ok, or the errno of the first refusal.
offline() {
    local b answer=ok out
    for b in $(lab_blocks "$2" | awk '$2 == "online" {print $1}'); do
        out=$(lab_try_write "/sys/devices/system/memory/$b/state" offline)
        echo "$out"
        if [ "${out##*: }" != OK ] && [ "$answer" = ok ]; then answer=$(errname "${out##*: }"); fi
    done
    echo "$1: $answer" >> "$LAB_OUT/carving.txt"
}

export LAB_STAGE=carving
seen region-size "$SIZE"
seen seed-at-boot "$(id_of "$(cat "$REGION/seed")")"

# --- daxR.0 bound to kmem, covering the whole region --------------------------------------------
region create-garbage create x
region create-two create 2
region create-huge create 99999999999
region create-no-space create 1
region delete-missing delete "dax$R.9"
region delete-bound delete "$DEV"
device size-misaligned-bound "$DEV" size 4096
device size-garbage "$DEV" size x
device size-bound "$DEV" size "$HALF"
device align-garbage "$DEV" align x
device align-3m "$DEV" align $((3 * MIB))
device align-bound "$DEV" align 4096
device mapping-garbage "$DEV" mapping x
device mapping-overlap "$DEV" mapping "$(printf '%#x-%#x' "$BASE" $((BASE + 2 * MIB - 1)))"

# --- released: shrink daxR.0, carve new devices -------------------------------------------------
offline offline-blocks "$DEV"
probe kmem-unbind "$DAX/drivers/kmem/unbind" "$DEV"
region delete-id0-sized delete "$DEV"
device size-not-multiple "$DEV" size $((HALF + MIB))
device grow-no-space "$DEV" size $((2 * SIZE))
device shrink-half "$DEV" size "$HALF"
seen size-after-shrink "$(cat "$DAX/devices/$DEV/size")"
seen available-after-shrink "$(cat "$REGION/available_size")"
seen ranges-after-shrink "$(ranges "$DEV")"
seen seed-before-create "$(id_of "$(cat "$REGION/seed")")"

region create create 1
seen create-reads "$(id_of "$(cat "$REGION/create")")"
seen seed-after-create "$(id_of "$(cat "$REGION/seed")")"
seen new-size "$(cat "$DAX/devices/$D1/size")"
seen new-align "$(cat "$DAX/devices/$D1/align")"
seen new-resource "$(printf '0x%x' $(( $(cat "$DAX/devices/$D1/resource") - BASE )))"
seen new-driver "$(lab_driver "$D1")"
seen new-memmap "$(cat "$DAX/devices/$D1/memmap_on_memory")"
for f in create delete seed available_size size align id; do
    seen "mode-region-$f" "$(stat -c %a "$REGION/$f")"
done
for f in size align mapping resource memmap_on_memory target_node; do
    seen "mode-device-$f" "$(stat -c %a "$DAX/devices/$D1/$f")"
done

region create-again create 1
seen youngest-after-create-again "$(id_of "$(cat "$REGION/create")")"
seen seed-after-create-again "$(id_of "$(cat "$REGION/seed")")"
probe bind-empty "$DAX/drivers/kmem/bind" "$D1"
device size-new "$D1" size "$QUARTER"
seen ranges-new "$(ranges "$D1")"
seen available-after-size-new "$(cat "$REGION/available_size")"
region delete-sized delete "$D1"
device align-1g "$D1" align $((1 << 30))
device align-4k "$D1" align 4096
seen align-after-4k "$(cat "$DAX/devices/$D1/align")"
seen region-align-after-4k "$(cat "$REGION/align")"
device size-4k-step "$D1" size $((QUARTER - 4096))
seen ranges-after-4k-step "$(ranges "$D1")"
device align-2m-misfit "$D1" align $((2 * MIB))
seen align-after-misfit "$(cat "$DAX/devices/$D1/align")"
device size-4k-back "$D1" size "$QUARTER"
seen ranges-after-4k-back "$(ranges "$D1")"
device align-2m "$D1" align $((2 * MIB))
probe kmem-bind-new "$DAX/drivers/kmem/bind" "$D1"
seen seed-after-bind "$(id_of "$(cat "$REGION/seed")")"
seen youngest-after-bind "$(id_of "$(cat "$REGION/create")")"
device size-bound-new "$D1" size 0
region delete-bound-new delete "$D1"

# --- holes: first fit from the region's start, new ranges where not adjacent -------------------
device shrink-id0-quarter "$DEV" size "$QUARTER"
device size-third "$D2" size $((64 * MIB))
seen ranges-third "$(ranges "$D2")"
device grow-id0-around "$DEV" size $((QUARTER + 64 * MIB))
seen ranges-id0-after-grow "$(ranges "$DEV")"
seen resource-id0-after-grow "$(printf '0x%x' $(( $(cat "$DAX/devices/$DEV/resource") - BASE )))"
seen page-offset-id0-mapping1 "$(cat "$DAX/devices/$DEV/mapping1/page_offset" 2> /dev/null)"
device shrink-id0-back "$DEV" size "$QUARTER"
seen ranges-id0-after-shrink-back "$(ranges "$DEV")"
AFTER=$((BASE + QUARTER + 64 * MIB))
device mapping-add "$D2" mapping "$(printf '%#x-%#x' "$AFTER" $((AFTER + 32 * MIB - 1)))"
seen ranges-third-after-mapping "$(ranges "$D2")"
AFTER=$((AFTER + 32 * MIB))
device mapping-misaligned "$D2" mapping "$(printf '%#x-%#x' "$AFTER" $((AFTER + 4095)))"
seen ranges-third-after-misaligned "$(ranges "$D2")"
device mapping-outside "$D2" mapping \
    "$(printf '%#x-%#x' $((BASE + SIZE)) $((BASE + SIZE + 2 * MIB - 1)))"
device mapping-taken "$D2" mapping "$(printf '%#x-%#x' "$BASE" $((BASE + 2 * MIB - 1)))"

# --- back as it was ------------------------------------------------------------------------------
device size-third-zero "$D2" size 0
region delete-third delete "$D2"
seen youngest-after-delete "$(id_of "$(cat "$REGION/create")")"
seen seed-after-delete "$(id_of "$(cat "$REGION/seed")")"
offline offline-blocks-new "$D1"
probe kmem-unbind-new "$DAX/drivers/kmem/unbind" "$D1"
device size-new-zero "$D1" size 0
region delete-new delete "$D1"
device shrink-id0-zero "$DEV" size 0
seen available-empty "$(cat "$REGION/available_size")"
region delete-id0-empty delete "$DEV"
region create-after-free create 1
seen create-after-free-reads "$(id_of "$(cat "$REGION/create")")"
seen seed-after-create-after-free "$(id_of "$(cat "$REGION/seed")")"
region delete-after-free delete "$D1"
device grow-back "$DEV" size "$SIZE"
seen ranges-id0-back "$(ranges "$DEV")"
probe kmem-bind-back "$DAX/drivers/kmem/bind" "$DEV"
seen driver-id0-back "$(lab_driver "$DEV")"

udevadm settle
sleep 1
kill "$MONITOR" 2> /dev/null || true
wait "$MONITOR" 2> /dev/null || true
cat "$LAB_OUT/carving.txt"
